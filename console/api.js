// The KvServer API as the console uses it: HTTP for reading and writing (a key's revision is
// its ETag, so a save names the revision it replaces), a WebSocket prefix subscription for
// watching. Everything goes to the page's own origin, through the same nginx.

/** What the server said when it refused: its `error` text, verbatim. */
export class ApiError extends Error {
  constructor(status, message, current) {
    super(message);
    this.status = status;
    /** For a conflict (412): the key's revision now, 0 when it is gone. */
    this.current = current;
  }
}

export class Api {
  constructor() {
    /** The bearer token for this tab, or "" (docs/access.md). */
    this.token = "";
  }

  headers(extra = {}) {
    return this.token ? { ...extra, Authorization: `Bearer ${this.token}` } : extra;
  }

  /** `/storage/<key>`: every byte that is not unreserved is percent-encoded, `/` included (the API decodes once). */
  static path(key) {
    return "/storage/" + encodeURIComponent(key);
  }

  static async refusal(response) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (typeof body.error === "string") message = body.error;
    } catch { /* not JSON: the status says enough */ }
    const etag = response.headers.get("ETag");
    return new ApiError(response.status, message, etag ? Number(etag.replaceAll('"', "")) : 0);
  }

  /**
   * One page of keys under `prefix` with their values: `{items, next, revision}`, each item's
   * value also as the server wrote it (`valueText`: parsing loses digits JavaScript cannot hold).
   */
  async list(prefix, after = null, limit = 50) {
    let target = `/storage/?prefix=${encodeURIComponent(prefix)}&values=1&limit=${limit}`;
    if (after !== null) target += `&after=${encodeURIComponent(after)}`;
    const response = await fetch(target, { headers: this.headers(), cache: "no-store" });
    if (!response.ok) throw await Api.refusal(response);
    const text = await response.text();
    const page = JSON.parse(text);
    const raw = Api.itemValues(text);
    page.items.forEach((item, index) => { item.valueText = raw[index]; });
    return page;
  }

  /**
   * The text of each item's `value` in a listing, in order. The listing is compact JSON
   * (`{"items":[{"key":…,"value":…,"rev":…},…],…}`): a value starts after `"value":` at the
   * items' own depth and ends where that depth is back and a `,` or `}` follows.
   */
  static itemValues(text) {
    const values = [];
    let depth = 0, inString = false, start = -1;
    for (let i = 0; i < text.length; i++) {
      const c = text[i];
      if (inString) {
        if (c === "\\") i++;
        else if (c === '"') inString = false;
        continue;
      }
      if (start >= 0 && depth === 3 && (c === "," || c === "}")) {
        values.push(text.slice(start, i));
        start = -1;
      }
      if (c === '"') {
        if (depth === 3 && start < 0 && text.startsWith('"value":', i) && (text[i - 1] === "," || text[i - 1] === "{")) {
          start = i + '"value":'.length;
          i = start - 1;
          continue;
        }
        inString = true;
      } else if (c === "{" || c === "[") depth++;
      else if (c === "}" || c === "]") depth--;
    }
    return values;
  }

  /** The key's value as JSON text with its revision and deadline, or null when it does not exist. */
  async get(key) {
    const response = await fetch(Api.path(key), { headers: this.headers(), cache: "no-store" });
    if (response.status === 204) return null;
    if (!response.ok) throw await Api.refusal(response);
    const text = await response.text();
    const expires = response.headers.get("KV-Expires-At");
    return {
      // The body is {"value":…}: the value's text is what lies between.
      valueText: text.slice('{"value":'.length, -1),
      rev: Number((response.headers.get("ETag") || "0").replaceAll('"', "")),
      expiresAt: expires ? Number(expires) : null,
    };
  }

  /**
   * Stores `valueText` (JSON text, sent as typed: the server says what is wrong with it) with an
   * optional TTL in the API's syntax, only if the key is still at `rev` (0: only if it does not
   * exist). Returns the new revision; throws an ApiError (412: a conflict, with the current revision).
   */
  async save(key, valueText, ttl, rev) {
    let body = `{"value":${valueText}`;
    if (ttl !== "") body += `,"ttl":${/^\d+(\.\d+)?$/.test(ttl) ? ttl : JSON.stringify(ttl)}`;
    body += "}";
    const condition = rev > 0 ? { "If-Match": `"${rev}"` } : { "If-None-Match": "*" };
    const response = await fetch(Api.path(key), {
      method: "POST", body, headers: this.headers({ "Content-Type": "application/json", ...condition }),
    });
    if (!response.ok) throw await Api.refusal(response);
    return Number((response.headers.get("ETag") || "0").replaceAll('"', ""));
  }

  /** Deletes the key if it is still at `rev`. */
  async remove(key, rev) {
    const response = await fetch(Api.path(key), { method: "DELETE", headers: this.headers(rev > 0 ? { "If-Match": `"${rev}"` } : {}) });
    if (!response.ok) throw await Api.refusal(response);
  }
}

/**
 * A prefix subscription that survives disconnections: it reconnects with a growing delay and
 * resumes with `since` (the last revision it saw) and `epoch`, so nothing is missed; when the
 * server cannot replay, it says `reset` and sends the whole state again.
 *
 * `on.change(key, valueText | null, rev, expired)`, `on.reset(rev)`, `on.state(state, detail)` with
 * state one of "connecting", "live", "resumed", "reconnecting", "closed", and `on.error(text)`.
 */
export class Watch {
  constructor(api, prefix, on) {
    this.api = api;
    this.prefix = prefix;
    this.on = on;
    this.since = null;
    this.epoch = null;
    this.delay = 500;
    this.closed = false;
    this.connect();
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const protocols = this.api.token ? ["kv.v1", `kv.bearer.${this.api.token}`] : [];
    this.on.state("connecting");
    const ws = new WebSocket(`${scheme}//${location.host}/ws`, protocols);
    this.ws = ws;
    const resuming = this.since !== null;
    ws.onopen = () => {
      const payload = { prefix: this.prefix };
      if (resuming) Object.assign(payload, { since: this.since, epoch: this.epoch });
      ws.send(JSON.stringify({ type: "subscribe", id: "watch", payload }));
    };
    ws.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.rev !== undefined && message.type !== "error") this.since = Math.max(this.since ?? 0, message.rev);
      switch (message.type) {
        case "ok":
          this.epoch = message.epoch ?? this.epoch;
          this.delay = 500;
          this.on.state(resuming ? "resumed" : "live", resuming ? `resumed from revision ${message.rev}: changes made while away were replayed` : "");
          break;
        case "reset":
          this.on.reset(message.rev);
          break;
        case "value":
          this.on.change(message.payload.key, Watch.valueText(event.data), message.rev);
          break;
        case "no-value":
          this.on.change(message.payload.key, null, message.rev, message.expired === true);
          break;
        case "error":
          this.on.error(message.payload);
          break;
      }
    };
    ws.onclose = () => {
      if (this.closed || this.ws !== ws) return;
      this.on.state("reconnecting", `connection lost; reconnecting in ${(this.delay / 1000).toFixed(1)} s`);
      setTimeout(() => this.connect(), this.delay);
      this.delay = Math.min(this.delay * 2, 10_000);
    };
  }

  /**
   * The value of a `value` message as the server wrote it. Parsing it would lose what
   * JavaScript numbers cannot hold (integers past 2^53, the exact digits of a decimal), and the
   * console must save back exactly what it was given. The payload is `{"key":…,"value":…}` and
   * ends the message: the value runs from after the key's string to the last two braces.
   */
  static valueText(text) {
    const marker = '"payload":{"key":"';
    let i = text.indexOf(marker) + marker.length;
    while (text[i] !== '"') i += text[i] === "\\" ? 2 : 1;
    return text.slice(i + 1 + ',"value":'.length, -2);
  }

  close() {
    this.closed = true;
    this.ws?.close();
    this.on.state("closed");
  }
}
