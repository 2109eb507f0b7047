// Commons: finish signing in when the browser blocked the session cookie (Canvas' iframe).
// The launch redirected here with a one-time ?code=; trade it once for the session id at
// POST /api/sessions/exchange, keep the id in memory only, and send it as x-session-id.
// Served as a static file under a CSP of script-src 'self'; no inline script anywhere.
(function () {
  "use strict";

  var app = document.getElementById("app");
  if (!app) return;
  var sessionId = null;
  var code = new URLSearchParams(window.location.search).get("code");
  // The code is single-use and short-lived; keep it out of the history and the address bar.
  window.history.replaceState(null, "", window.location.pathname);

  function slot(name) {
    return app.querySelector('[data-slot="' + name + '"]');
  }

  function show(view) {
    var views = app.querySelectorAll("[data-view]");
    for (var i = 0; i < views.length; i++) {
      views[i].hidden = views[i].getAttribute("data-view") !== view;
    }
    var heading = app.querySelector('[data-view="' + view + '"] h1');
    if (heading) {
      heading.setAttribute("tabindex", "-1");
      heading.focus();
    }
  }

  function fail(message) {
    slot("error").textContent = message;
    show("error");
  }

  function api(method, path, body) {
    var headers = { accept: "application/json" };
    if (sessionId) headers["x-session-id"] = sessionId;
    if (body !== undefined) headers["content-type"] = "application/json";
    return fetch(path, {
      method: method,
      headers: headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit", // a stale cookie must not conflict with x-session-id
      cache: "no-store",
    }).then(function (response) {
      if (response.status === 204) return null;
      return response.json().then(function (data) {
        if (!response.ok) throw new Error(data.detail || "The request failed (" + response.status + ").");
        return data;
      });
    });
  }

  // "29 November 2026, 19:00 UTC", as the server-rendered page shows it.
  var MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
    "September", "October", "November", "December"];
  function when(iso) {
    var d = new Date(iso);
    if (!iso || isNaN(d.getTime())) return iso || "";
    var pad = function (n) { return ("0" + n).slice(-2); };
    return d.getUTCDate() + " " + MONTHS[d.getUTCMonth()] + " " + d.getUTCFullYear() + ", " +
      pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + " UTC";
  }

  function home() {
    return api("GET", "/api/sessions/" + encodeURIComponent(sessionId)).then(function (s) {
      slot("name").textContent = s.userFullName || "Canvas user";
      slot("account").textContent = s.accountName || "";
      slot("roles").textContent = (s.roles || []).join(", ") || "none";
      slot("canvas-user").textContent = s.canvasUserId || "unknown";
      slot("expires").textContent = when(s.expires);
      var avatar = slot("avatar");
      if (s.userAvatarUrl && /^(https:\/\/|data:image\/)/.test(s.userAvatarUrl)) {
        avatar.src = s.userAvatarUrl;
        avatar.hidden = false;
      }
      show("home");
    });
  }

  app.querySelector('[data-action="accept"]').addEventListener("click", function (event) {
    event.target.disabled = true;
    api("POST", "/api/terms/accept", { version: slot("version").textContent })
      .then(home)
      .catch(function (error) {
        event.target.disabled = false;
        fail(error.message);
      });
  });

  app.querySelector('[data-action="logout"]').addEventListener("click", function () {
    api("GET", "/api/sessions/logout")
      .then(function () {
        sessionId = null;
        show("signed-out");
      })
      .catch(function (error) {
        fail(error.message);
      });
  });

  if (!code) {
    fail("This page was opened without a sign-in code.");
    return;
  }
  api("POST", "/api/sessions/exchange", { code: code })
    .then(function (data) {
      sessionId = data.sessionId;
      return api("GET", "/api/terms");
    })
    .then(function (terms) {
      if (terms.accepted) return home();
      if (slot("version").textContent !== terms.version) {
        // The terms changed since this page was rendered: show the new text as it is written.
        slot("version").textContent = terms.version;
        slot("text").textContent = terms.text;
        slot("text").classList.add("plain");
      }
      show("terms");
    })
    .catch(function (error) {
      fail(error.message);
    });
})();
