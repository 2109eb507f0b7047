// Commons: the end of an LTI Dynamic Registration. Tell the platform's window (the one that
// opened us, or the frame we are in) that we are done, so it closes us and shows the result:
// {subject: "org.imsglobal.lti.close"}. The message carries nothing secret; it goes to the
// origin of the page that sent us here when the browser tells us it, else to any origin, as
// the specification shows.
(function () {
  "use strict";

  var root = document.getElementById("registration");
  if (!root) return;
  var target = window.opener || (window.parent !== window ? window.parent : null);
  if (!target) return;
  var origin = "*";
  try {
    var referrer = new URL(document.referrer);
    if (referrer.protocol === "https:" || referrer.protocol === "http:") origin = referrer.origin;
  } catch (e) {
    // no referrer: any origin
  }
  target.postMessage({ subject: root.dataset.subject }, origin);
})();
