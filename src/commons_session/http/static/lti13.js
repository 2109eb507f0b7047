// Commons: LTI 1.3 launches when the browser blocks the state cookie (Canvas' iframe), using
// LTI Platform Storage (1EdTech "LTI Client Side postMessages" + "postMessage Storage").
// Messages go only to the platform's OIDC origin (data-origin) and only its answers count.
//
// login:  store this browser's binding with the platform (lti.put_data), then go on to the
//         platform's authorization endpoint (whether or not the platform answered: the state
//         cookie may work).
// launch: ask the platform for the binding (lti.get_data) and complete the launch with a JSON
//         POST to /api/lti/launch/confirm, which cannot be forged by another site's form.
(function () {
  "use strict";

  var root = document.getElementById("lti");
  if (!root) return;
  var data = root.dataset;
  var TIMEOUT_MS = 2500;

  function platformFrame() {
    var parent = window.parent !== window ? window.parent : window.opener;
    if (!parent) return null;
    if (!data.target || data.target === "_parent") return parent;
    try {
      return parent.frames[data.target] || null;
    } catch (e) {
      return null;
    }
  }

  function messageId() {
    var bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    return Array.prototype.map
      .call(bytes, function (b) {
        return ("0" + b.toString(16)).slice(-2);
      })
      .join("");
  }

  function ask(subject, fields) {
    return new Promise(function (resolve, reject) {
      var frame = platformFrame();
      if (!frame) {
        reject(new Error("Canvas' storage frame is not reachable."));
        return;
      }
      var id = messageId();
      var timer = window.setTimeout(function () {
        window.removeEventListener("message", listen);
        reject(new Error("Canvas did not answer."));
      }, TIMEOUT_MS);
      function listen(event) {
        var reply = event.data;
        if (event.origin !== data.origin || !reply || typeof reply !== "object") return;
        if (reply.message_id !== id) return;
        if (reply.subject !== subject + ".response" && reply.subject !== "org.imsglobal." + subject + ".response") {
          return;
        }
        window.clearTimeout(timer);
        window.removeEventListener("message", listen);
        if (reply.error) reject(new Error(reply.error.message || reply.error.code || "Canvas refused."));
        else resolve(reply);
      }
      window.addEventListener("message", listen);
      var message = { subject: subject, message_id: id };
      for (var key in fields) message[key] = fields[key];
      frame.postMessage(message, data.origin);
    });
  }

  function show(view) {
    var views = root.querySelectorAll("[data-view]");
    for (var i = 0; i < views.length; i++) {
      views[i].hidden = views[i].getAttribute("data-view") !== view;
    }
  }

  var key = "state_" + data.state;

  if (data.mode === "login") {
    var go = function () {
      window.location.replace(data.redirect);
    };
    ask("lti.put_data", { key: key, value: data.binding }).then(go, go);
    return;
  }

  if (data.mode === "launch") {
    ask("lti.get_data", { key: key })
      .then(function (reply) {
        if (typeof reply.value !== "string" || !reply.value) throw new Error("Canvas has no record of this launch.");
        return fetch("/api/lti/launch/confirm", {
          method: "POST",
          headers: { "content-type": "application/json", accept: "application/json" },
          body: JSON.stringify({ id_token: data.idToken, state: data.state, binding: reply.value }),
          credentials: "same-origin",
          cache: "no-store",
        });
      })
      .then(function (response) {
        return response.json().then(function (body) {
          if (!response.ok) throw new Error(body.detail || "The launch was refused.");
          window.location.replace(body.location);
        });
      })
      .catch(function (error) {
        root.querySelector('[data-slot="error"]').textContent = error.message;
        show("error");
      });
  }
})();
