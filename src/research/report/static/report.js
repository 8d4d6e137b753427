// Sorting and filtering of the findings table. Works with the keyboard (the sort
// controls are buttons); without JavaScript the table is simply shown in rank order.
(function () {
  "use strict";
  var table = document.getElementById("findings");
  if (!table) { return; }
  var tbody = table.tBodies[0];
  var rows = Array.prototype.slice.call(tbody.rows);
  var status = document.getElementById("table-status");
  var form = document.getElementById("filters");
  var lang = document.documentElement.lang || "en";
  var numberFormat = new Intl.NumberFormat(lang);
  var collator = new Intl.Collator(lang, { numeric: true, sensitivity: "base" });

  function cellValue(row, col, type) {
    var v = row.cells[col].getAttribute("data-value");
    if (type === "number") { var x = parseFloat(v); return isNaN(x) ? -Infinity : x; }
    return v || "";
  }

  function sortBy(button) {
    var th = button.parentNode;
    var col = parseInt(button.getAttribute("data-col"), 10);
    var type = button.getAttribute("data-type");
    var current = th.getAttribute("aria-sort");
    var dir = current === "ascending" ? "descending" : "ascending";
    Array.prototype.forEach.call(table.tHead.querySelectorAll("th[aria-sort]"), function (other) {
      other.setAttribute("aria-sort", "none");
    });
    th.setAttribute("aria-sort", dir);
    var sign = dir === "ascending" ? 1 : -1;
    rows.sort(function (a, b) {
      var x = cellValue(a, col, type), y = cellValue(b, col, type);
      var c = type === "number" ? (x - y) : collator.compare(x, y);
      if (c === 0) { c = cellValue(a, 0, "number") - cellValue(b, 0, "number"); return c; }
      return sign * c;
    });
    rows.forEach(function (row) { tbody.appendChild(row); });
  }

  function applyFilters() {
    var severity = document.getElementById("filter-severity").value;
    var rule = document.getElementById("filter-rule").value;
    var text = document.getElementById("filter-text").value.trim().toLowerCase();
    var shown = 0;
    rows.forEach(function (row) {
      var ok = (!severity || row.getAttribute("data-severity") === severity) &&
               (!rule || row.getAttribute("data-rule") === rule) &&
               (!text || row.cells[4].textContent.toLowerCase().indexOf(text) !== -1);
      row.hidden = !ok;
      if (ok) { shown += 1; }
    });
    var template = status.getAttribute("data-template") || "{shown} / {total}";
    status.textContent = template.replace("{shown}", numberFormat.format(shown))
                                 .replace("{total}", numberFormat.format(rows.length));
  }

  Array.prototype.forEach.call(table.querySelectorAll("button.sort"), function (button) {
    button.addEventListener("click", function () { sortBy(button); });
  });
  if (form) {
    form.hidden = false;
    form.addEventListener("submit", function (e) { e.preventDefault(); });
    Array.prototype.forEach.call(form.querySelectorAll("select, input"), function (el) {
      el.addEventListener("input", applyFilters);
      el.addEventListener("change", applyFilters);
    });
  }
  applyFilters();
}());
