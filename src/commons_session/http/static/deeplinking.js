// Commons: post the signed LTI Deep Linking response to the platform at once. The page's form
// carries the JWT to the platform's return URL; without script, its button does the same.
(function () {
  "use strict";
  var form = document.getElementById("deep-linking");
  if (form) form.submit();
})();
