// Commons: LTI 1.3 launches when the browser blocks the state cookie (Canvas' iframe), using
// LTI Platform Storage (1EdTech "LTI Client Side postMessages", "postMessage Storage" and "OIDC
// Login with LTI Client Side postMessages"). See docs/lti13.md.
//
// 1. Ask the platform window (parent, else opener) what it answers: "lti.capabilities" (Canvas)
//    and "org.imsglobal.lti.capabilities" (the spec's older spelling, Brightspace and Moodle).
//    That message carries nothing secret, so it goes to any origin; only the window asked may
//    answer. Storage is used only if put_data and get_data are both offered, in the spelling
//    offered, sent to the frame the answer names (else lti_storage_target, else the parent).
// 2. put_data and get_data carry the browser binding, so they go only to the platform's OIDC
//    origin (data-origin), and an answer counts only if it comes from that origin, from the
//    window written to, with the same message_id, subject and key, and without an "error".
//
// login:  store the binding (key "state_<state>") and the nonce ("nonce_<nonce>"), then go on to
//         the platform's authorization endpoint, whether or not that worked (the state cookie
//         may still come back).
// launch: read both back and complete the launch with a JSON POST to /api/lti/launch/confirm
//         (another site's form cannot send JSON), which checks them against the login.
(function () {
  "use strict";

  var root = document.getElementById("lti");
  if (!root) return;
  var data = root.dataset;
  var CAPABILITIES_MS = 1500;
  var STORAGE_MS = 2500;
  var PREFIX = "org.imsglobal.";

  function platformWindow() {
    if (window.parent && window.parent !== window) return window.parent;
    return window.opener || null;
  }

  function frameNamed(name) {
    var parent = platformWindow();
    if (!parent) return null;
    if (!name || name === "_parent") return parent;
    try {
      var frame = parent.frames[name];
      // frames[...] also answers "length" and indexes: only a window other than ours will do.
      return frame && frame !== window && typeof frame.postMessage === "function" ? frame : null;
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

  function refused(reply) {
    var error = reply.error;
    var text = error && typeof error === "object" ? error.message || error.code : String(error);
    return new Error("Canvas refused: " + (text || "error") + ".");
  }

  // One message and its answer: subject + ".response", the same message_id, from `target`
  // (and from `origin` unless it is "*"). An "error" in the answer rejects.
  function exchange(target, origin, subject, fields, timeoutMs) {
    return new Promise(function (resolve, reject) {
      if (!target) {
        reject(new Error("Canvas' storage frame is not reachable."));
        return;
      }
      var id = messageId();
      var timer = window.setTimeout(function () {
        window.removeEventListener("message", listen);
        reject(new Error("Canvas did not answer."));
      }, timeoutMs);
      function listen(event) {
        var reply = event.data;
        if (event.source !== target) return;
        if (origin !== "*" && event.origin !== origin) return;
        if (!reply || typeof reply !== "object" || reply.message_id !== id) return;
        if (reply.subject !== subject + ".response") return;
        window.clearTimeout(timer);
        window.removeEventListener("message", listen);
        if (reply.error !== undefined && reply.error !== null) reject(refused(reply));
        else resolve(reply);
      }
      window.addEventListener("message", listen);
      var message = { subject: subject, message_id: id };
      for (var key in fields) message[key] = fields[key];
      target.postMessage(message, origin);
    });
  }

  // {put: {subject, frame}, get: {subject, frame}} from a capabilities answer, or null.
  function storageOffered(reply) {
    var list = Array.isArray(reply.supported_messages) ? reply.supported_messages : [];
    var found = {};
    list.forEach(function (entry) {
      if (entry && typeof entry.subject === "string") found[entry.subject] = entry;
    });
    var spellings = ["", PREFIX];
    for (var i = 0; i < spellings.length; i++) {
      var put = found[spellings[i] + "lti.put_data"];
      var get = found[spellings[i] + "lti.get_data"];
      if (put && get) {
        return { put: routeOf(put), get: routeOf(get) };
      }
    }
    return null;
  }

  function routeOf(entry) {
    var frame = typeof entry.frame === "string" && entry.frame ? entry.frame : data.target || "_parent";
    return { subject: entry.subject, frame: frame };
  }

  // Both spellings at once; the first answer that offers storage wins.
  function capabilities() {
    return new Promise(function (resolve, reject) {
      var subjects = ["lti.capabilities", PREFIX + "lti.capabilities"];
      var left = subjects.length;
      var settled = false;
      function failed() {
        left -= 1;
        if (left === 0 && !settled) reject(new Error("Canvas offers no storage for this launch."));
      }
      subjects.forEach(function (subject) {
        exchange(platformWindow(), "*", subject, {}, CAPABILITIES_MS).then(function (reply) {
          var storage = storageOffered(reply);
          if (!storage) return failed();
          if (!settled) {
            settled = true;
            resolve(storage);
          }
        }, failed);
      });
    });
  }

  function put(storage, key, value) {
    var route = storage.put;
    return exchange(frameNamed(route.frame), data.origin, route.subject, { key: key, value: value }, STORAGE_MS).then(
      function (reply) {
        if (reply.key !== key) throw new Error("Canvas answered for another key.");
      }
    );
  }

  function get(storage, key) {
    var route = storage.get;
    return exchange(frameNamed(route.frame), data.origin, route.subject, { key: key }, STORAGE_MS).then(
      function (reply) {
        if (reply.key !== key) throw new Error("Canvas answered for another key.");
        if (typeof reply.value !== "string" || !reply.value) throw new Error("Canvas has no record of this launch.");
        return reply.value;
      }
    );
  }

  function show(view) {
    var views = root.querySelectorAll("[data-view]");
    for (var i = 0; i < views.length; i++) {
      views[i].hidden = views[i].getAttribute("data-view") !== view;
    }
  }

  var stateKey = "state_" + data.state;
  var nonceKey = "nonce_" + data.nonce;

  if (data.mode === "login") {
    var go = function () {
      window.location.replace(data.redirect);
    };
    capabilities()
      .then(function (storage) {
        return Promise.all([put(storage, stateKey, data.binding), put(storage, nonceKey, data.nonce)]);
      })
      .then(go, go);
    return;
  }

  if (data.mode === "launch") {
    capabilities()
      .then(function (storage) {
        return Promise.all([get(storage, stateKey), get(storage, nonceKey)]);
      })
      .then(function (values) {
        return fetch("/api/lti/launch/confirm", {
          method: "POST",
          headers: { "content-type": "application/json", accept: "application/json" },
          body: JSON.stringify({ id_token: data.idToken, state: data.state, binding: values[0], nonce: values[1] }),
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
