// zonepki console: progressive enhancement only (every form also works without script).
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  // Buttons that open a dialog (Remint CA).
  document.querySelectorAll("[data-dialog]").forEach(function (b) {
    b.addEventListener("click", function () {
      var d = document.getElementById(b.getAttribute("data-dialog"));
      if (d && typeof d.showModal === "function") { d.showModal(); }
    });
  });
  document.querySelectorAll("[data-close]").forEach(function (b) {
    b.addEventListener("click", function () {
      var d = document.getElementById(b.getAttribute("data-close"));
      if (d) { d.close(); }
    });
  });
  // "Yes, I want to ...": the remaining fields are activated only once confirmed.
  document.querySelectorAll("[data-enables]").forEach(function (c) {
    var target = document.getElementById(c.getAttribute("data-enables"));
    var sync = function () { if (target) { target.disabled = !c.checked; } };
    c.addEventListener("change", sync);
    sync();
  });
  // Cancel asks for confirmation, as the manual's dialog does.
  var cancel = document.getElementById("cancel");
  if (cancel && !cancel.disabled) {
    cancel.form.addEventListener("submit", function (e) {
      if (!window.confirm("Cancel the running operation?")) { e.preventDefault(); }
    });
  }
});
