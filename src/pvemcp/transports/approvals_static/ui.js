// The approvals page: every call uses the bearer token pasted into #token, kept in this
// closure only (never localStorage, a cookie or the URL). Every value from the API is put
// in the page with textContent: a plan is text an agent wrote and may hold markup.
"use strict";
(function () {
  const api = new URL("../approvals", location.href).pathname;
  let token = "";
  let chosen = null;

  const $ = (id) => document.getElementById(id);
  function text(tag, value, cls) {
    const node = document.createElement(tag);
    node.textContent = value === undefined || value === null ? "" : String(value);
    if (cls) node.className = cls;
    return node;
  }
  function when(seconds) {
    if (typeof seconds !== "number") return "";
    const left = Math.round((seconds * 1000 - Date.now()) / 60000);
    const at = new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC";
    return left >= 0 ? at + " (in " + left + " min)" : at + " (past)";
  }
  function target(plan) {
    const found = plan && plan.target;
    if (found === undefined || found === null) return "";
    if (typeof found !== "object") return String(found);
    return Object.keys(found).map((key) => key + "=" + JSON.stringify(found[key])).join(" ");
  }
  function who(principal) {
    if (!principal) return "";
    return principal.sub || principal.subject || JSON.stringify(principal);
  }

  function showError(message) {
    const box = $("error");
    box.textContent = message;
    box.hidden = !message;
  }

  // The API's structured error {"error": {code, message, field?, hint?}}, or the bearer
  // check's OAuth one {"error": "invalid_token", "error_description": "..."}.
  async function call(method, path, body) {
    if (!token) throw new Error("no_token: paste a bearer token first");
    const init = { method, headers: { Authorization: "Bearer " + token }, cache: "no-store", credentials: "omit" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(api + path, init);
    let data = null;
    try { data = await response.json(); } catch (_) { data = null; }
    if (response.ok && data) return data;
    const failure = data && data.error;
    let code = "http_" + response.status;
    let message = response.statusText || "request failed";
    let hint = "";
    if (failure && typeof failure === "object") {
      code = failure.code || code;
      message = failure.message || message;
      hint = failure.hint || "";
      if (failure.field) message += " (field: " + failure.field + ")";
    } else if (data && (typeof failure === "string" || data.error_description)) {
      code = failure || code;
      message = data.error_description || message;
    }
    throw new Error(code + ": " + message + (hint ? "\nHint: " + hint : ""));
  }

  async function refresh() {
    showError("");
    try {
      const data = await call("GET", "");
      render(data.approvals || []);
    } catch (failure) {
      showError(failure.message);
    }
  }

  function render(items) {
    const rows = $("rows");
    rows.replaceChildren();
    for (const item of items) {
      const row = document.createElement("tr");
      row.dataset.id = item.id;
      if (chosen === item.id) row.className = "chosen";
      row.append(
        text("td", item.tool), text("td", item.cluster), text("td", target(item.plan)),
        text("td", item.plan && item.plan.summary, "plan"), text("td", who(item.requester)),
        text("td", when(item.expires)),
      );
      const open = text("button", "Show");
      open.type = "button";
      open.addEventListener("click", () => show(item.id));
      const cell = document.createElement("td");
      cell.append(open);
      row.append(cell);
      rows.append(row);
    }
    $("empty").hidden = items.length > 0;
    $("pending").hidden = false;
  }

  async function show(id) {
    showError("");
    $("outcome").textContent = "";
    try {
      const item = (await call("GET", "/" + encodeURIComponent(id))).approval;
      chosen = item.id;
      for (const row of $("rows").children) row.className = row.dataset.id === chosen ? "chosen" : "";
      $("detail-title").textContent = item.tool + " on " + item.cluster;
      const facts = $("facts");
      facts.replaceChildren();
      const pairs = [
        ["Request", item.id], ["Status", item.status], ["Target", target(item.plan)],
        ["Requester", who(item.requester)], ["Approvers", (item.approvers || []).join(", ")],
        ["Rules", (item.rule_ids || []).join(", ")], ["Expires", when(item.expires)],
      ];
      for (const [name, value] of pairs) facts.append(text("dt", name), text("dd", value));
      $("plan").textContent = JSON.stringify(item.plan, null, 2);
      $("reason").value = "";
      $("detail").hidden = false;
      $("detail").scrollIntoView({ block: "nearest" });
    } catch (failure) {
      showError(failure.message);
    }
  }

  async function decide(verdict) {
    const reason = $("reason").value.trim();
    if (!chosen || !reason) {
      showError("invalid_argument: a reason is required (field: reason)");
      return;
    }
    showError("");
    try {
      const item = (await call("POST", "/" + encodeURIComponent(chosen) + "/" + verdict, { reason })).approval;
      $("outcome").textContent = item.status + " by " + who(item.decided_by) + ": " + item.reason;
      await refresh();
    } catch (failure) {
      showError(failure.message);
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("login").addEventListener("submit", (event) => {
      event.preventDefault();
      token = $("token").value.trim();
      $("token").value = "";
      refresh();
    });
    $("forget").addEventListener("click", () => {
      token = "";
      chosen = null;
      $("rows").replaceChildren();
      $("pending").hidden = true;
      $("detail").hidden = true;
      showError("");
    });
    $("refresh").addEventListener("click", refresh);
    $("decide").addEventListener("submit", (event) => {
      event.preventDefault();
      decide(event.submitter && event.submitter.value === "deny" ? "deny" : "approve");
    });
  });
})();
