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
  // A choice that shows its own fields (Change CA: internal or external): the element whose
  // id is the prefix plus the chosen value is shown, those of the other values hidden.
  document.querySelectorAll("select[data-shows]").forEach(function (sel) {
    var prefix = sel.getAttribute("data-shows");
    var sync = function () {
      Array.prototype.forEach.call(sel.options, function (o) {
        var el = document.getElementById(prefix + o.value);
        if (el) { el.hidden = o.value !== sel.value; }
      });
    };
    sel.addEventListener("change", sync);
    sync();
  });
  // Generate CSR, Remint Certificate: the common name is asked only when exactly one server
  // of that form is selected (each form's boxes name the row they control).
  var groups = {};
  document.querySelectorAll("input[data-count]").forEach(function (b) {
    var id = b.getAttribute("data-count");
    (groups[id] = groups[id] || []).push(b);
  });
  Object.keys(groups).forEach(function (id) {
    var boxes = groups[id];
    var row = document.getElementById(id);
    var count = function () {
      var n = 0;
      boxes.forEach(function (b) { if (b.checked) { n += 1; } });
      if (row) {
        row.hidden = n !== 1;
        row.querySelectorAll("input").forEach(function (i) { i.disabled = n !== 1; });
      }
    };
    boxes.forEach(function (b) { b.addEventListener("change", count); });
    count();
  });
  // Cancel asks for confirmation, as the manual's dialog does.
  var cancel = document.getElementById("cancel");
  if (cancel && !cancel.disabled) {
    cancel.form.addEventListener("submit", function (e) {
      if (!window.confirm("Cancel the running operation?")) { e.preventDefault(); }
    });
  }
});
