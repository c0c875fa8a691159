// The console's page: browse keys by prefix, edit one, watch them all change live.
import { Api, ApiError, Watch } from "./api.js";

const $ = (id) => document.getElementById(id);
const api = new Api();
api.token = sessionStorage.getItem("kv-token") ?? "";

/** What the page knows of each listed key: its value text (null: gone), revision, deadline. */
const keys = new Map();
let prefix = "", next = null, watch = null;
/** The key in the editor, the revision its text came from, and whether the text was edited since. */
let selected = null, selectedRev = 0, selectedExpires = null, edited = false;

// ---- JSON text, formatted without parsing (numbers keep every digit) ----

/** `text` (compact JSON) indented by two spaces; strings and numbers are copied as they are. */
export function formatJSON(text) {
  let out = "", depth = 0, inString = false;
  const newline = () => "\n" + "  ".repeat(depth);
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      out += c;
      if (c === "\\") out += text[++i];
      else if (c === '"') inString = false;
      continue;
    }
    switch (c) {
      case '"': inString = true; out += c; break;
      case "{": case "[":
        if (text[i + 1] === (c === "{" ? "}" : "]")) { out += c + text[++i]; break; }
        depth++; out += c + newline(); break;
      case "}": case "]": depth--; out += newline() + c; break;
      case ",": out += "," + newline(); break;
      case ":": out += ": "; break;
      case " ": case "\n": case "\t": case "\r": break;
      default: out += c;
    }
  }
  return out;
}

// ---- Messages ----

function say(text, kind = "info") {
  const message = $("message");
  message.textContent = text;
  message.dataset.kind = kind;
}

function refusal(error) {
  return error instanceof ApiError ? error.message : `the request failed: ${error.message}`;
}

function describeExpiry(expiresAt) {
  if (!expiresAt) return "never";
  const seconds = Math.max(0, Math.round((expiresAt - Date.now()) / 1000));
  return `${new Date(expiresAt).toISOString()} (in ${seconds} s)`;
}

// ---- The list ----

function render() {
  const list = $("keys");
  list.replaceChildren();
  const sorted = [...keys.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  for (const key of sorted) {
    const entry = keys.get(key);
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "key";
    button.dataset.key = key;
    if (entry.gone) button.dataset.gone = entry.gone;
    if (key === selected) button.setAttribute("aria-current", "true");
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = key;
    const preview = document.createElement("span");
    preview.className = "preview";
    preview.textContent = entry.gone ? entry.gone : (entry.valueText ?? "").slice(0, 80);
    button.append(name, preview);
    button.addEventListener("click", () => select(key));
    item.append(button);
    list.append(item);
  }
  $("more").hidden = next === null;
  $("list-status").textContent = `${keys.size} key${keys.size === 1 ? "" : "s"} shown${next === null ? "" : "; more below"}`;
}

async function loadPage(after) {
  try {
    const page = await api.list(prefix, after);
    for (const item of page.items) {
      const known = keys.get(item.key);
      // A change the watch already delivered is newer than the page: it stays.
      if (known && known.rev >= item.rev) continue;
      keys.set(item.key, { valueText: item.valueText, rev: item.rev, expiresAt: item.expiresAt ?? null, gone: null });
    }
    next = page.next;
    render();
  } catch (error) {
    say(refusal(error), "error");
  }
}

/** Watches `newPrefix` first, then lists it: no change falls between the two. */
function browse(newPrefix) {
  prefix = newPrefix;
  keys.clear();
  next = null;
  watch?.close();
  watch = new Watch(api, prefix, {
    change: changed,
    reset: () => { keys.clear(); loadPage(null); },
    state: showState,
    error: (text) => say(text, "error"),
  });
  loadPage(null);
}

function showState(state, detail = "") {
  const badge = $("connection");
  badge.dataset.state = state;
  const words = { connecting: "connecting…", live: "live", resumed: "live (resumed)", reconnecting: "reconnecting…", closed: "closed" };
  badge.textContent = words[state] + (detail ? ` — ${detail}` : "");
}

/** A change from the watch: the list and, for the key in the editor, the editor follow it. */
function changed(key, valueText, rev, expired) {
  const known = keys.get(key);
  if (known && rev !== undefined && known.rev >= rev) return;
  const gone = valueText === null ? (expired ? "expired" : "deleted") : null;
  keys.set(key, { valueText, rev: rev ?? known?.rev ?? 0, expiresAt: valueText === null ? null : known?.expiresAt ?? null, gone });
  render();
  if (key !== selected) return;
  if (valueText === null) {
    selectedExpires = null;
    $("key-expires").textContent = "–";
    $("key-status").textContent = `${gone} on the server (revision ${rev})`;
    return;
  }
  if (edited) {
    $("key-status").textContent = `changed on the server (revision ${rev}): saving would overwrite it, so Save will refuse; Reload shows it`;
    return;
  }
  selectedRev = rev;
  $("value").value = formatJSON(valueText);
  $("key-rev").textContent = String(rev);
  $("key-status").textContent = "updated live";
  // A write without a TTL clears the key's deadline; one with a TTL sets a new one: read it.
  refreshExpiry(key);
}

async function refreshExpiry(key) {
  try {
    const current = await api.get(key);
    if (key !== selected || !current) return;
    selectedExpires = current.expiresAt;
    $("key-expires").textContent = describeExpiry(current.expiresAt);
  } catch { /* the value on screen stays; the next change tries again */ }
}

// ---- The editor ----

async function select(key) {
  selected = key;
  edited = false;
  render();
  $("empty-detail").hidden = true;
  $("editor").hidden = false;
  $("key-name").textContent = key;
  say("");
  try {
    const current = await api.get(key);
    if (key !== selected) return;
    if (!current) {
      selectedRev = 0;
      selectedExpires = null;
      $("value").value = "";
      $("key-rev").textContent = "–";
      $("key-expires").textContent = "never";
      $("key-status").textContent = keys.has(key) ? (keys.get(key).gone ?? "absent") : "new key: not stored yet";
      return;
    }
    selectedRev = current.rev;
    selectedExpires = current.expiresAt;
    $("value").value = formatJSON(current.valueText);
    $("key-rev").textContent = String(current.rev);
    $("key-expires").textContent = describeExpiry(current.expiresAt);
    $("key-status").textContent = "as stored";
  } catch (error) {
    say(refusal(error), "error");
  }
}

async function save(event) {
  event.preventDefault();
  if (selected === null) return;
  try {
    const rev = await api.save(selected, $("value").value, $("ttl").value.trim(), selectedRev);
    selectedRev = rev;
    edited = false;
    $("key-rev").textContent = String(rev);
    $("key-status").textContent = "saved";
    say(`Saved ${selected} (revision ${rev}).`, "ok");
    refreshExpiry(selected);
  } catch (error) {
    if (error instanceof ApiError && error.status === 412) {
      say(error.current === 0
        ? `Not saved: ${selected} was deleted on the server meanwhile. Your text is kept; Reload, then Save, to create it again.`
        : `Not saved: ${selected} changed on the server meanwhile (now revision ${error.current}). Your text is kept; Reload shows the server's value.`, "error");
      $("key-status").textContent = "conflict";
    } else {
      say(refusal(error), "error");
    }
  }
}

async function remove() {
  if (selected === null) return;
  try {
    await api.remove(selected, selectedRev);
    say(`Deleted ${selected}.`, "ok");
  } catch (error) {
    say(error instanceof ApiError && error.status === 412
      ? `Not deleted: ${selected} changed on the server meanwhile (now revision ${error.current}); Reload to see it.`
      : refusal(error), "error");
  }
}

// ---- Wiring ----

$("prefix-form").addEventListener("submit", (event) => {
  event.preventDefault();
  browse($("prefix").value);
});
$("more").addEventListener("click", () => loadPage(next));
$("editor").addEventListener("submit", save);
$("value").addEventListener("input", () => { edited = true; });
$("reload").addEventListener("click", () => select(selected));
$("delete").addEventListener("click", remove);
$("new-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = $("new-key").value;
  if (key) select(key);
});
$("token").value = api.token;
$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  api.token = $("token").value.trim();
  sessionStorage.setItem("kv-token", api.token);
  say(api.token ? "Using the token for this tab." : "No token: anonymous.", "ok");
  browse(prefix);
});
// Deadlines count down on screen.
setInterval(() => { if (selected !== null && selectedExpires) $("key-expires").textContent = describeExpiry(selectedExpires); }, 1000);

browse(new URLSearchParams(location.search).get("prefix") ?? "");
