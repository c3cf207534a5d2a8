/** Messages (#/messages): the top bar's unread count, and the conversations between customers and the operator. */
import { RELOAD_DELAY_MS } from "./settings.js";
import { badge, html, shortAddress, when } from "./format.js";
import { api, errorBox, query } from "./api.js";
import { $, session } from "./app.js";

// ---------------------------------------------------------------- messages

/** How many conversations the operator's list shows a page at a time, and messages a conversation loads at once. */
export const CONVERSATIONS_PAGE = 100;
export const MESSAGES_PAGE = 50;

/** The top bar's unread count: asked of the server again whenever a message or read mark goes live. */
export const inbox = {
  loads: 0,
  timer: null,

  async refresh() {
    const load = ++this.loads;
    let page;
    try {
      page = await api(`/conversations?${query({ with_messages: true, page_size: 1 })}`);
    } catch (err) {
      return;  // the badge keeps its last count; the page shows the error where it matters
    }
    if (load === this.loads && session.me) this.show(page.unread);
  },

  soon() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.refresh(), RELOAD_DELAY_MS);
  },

  clear() {
    clearTimeout(this.timer);
    this.loads += 1;
    this.show(0);
  },

  show(count) {
    const badge = $("unread-badge");
    badge.textContent = String(count);
    badge.hidden = !count;
    $("messages-link").title = count ? `${count} unread` : "no unread messages";
  },

  onLive(message) {
    if (["hello", "message", "messages_read"].includes(message.type)) this.soon();
  },
};

/** Who wrote a message, as the reader sees it. */
export function authorLabel(message, conversation) {
  const side = session.me.role === "operator" ? "operator" : "customer";
  if (message.author === side) return "You";
  if (message.author === "operator") return "Operator";
  return (conversation && conversation.customer_name) || "Customer";
}

export function conversationTitle(c) {
  const meter = c.meters.length ? c.meters[0] : null;
  return c.customer_name || (meter && meter.name) || shortAddress(c.account_ref);
}

/**
 * Messages between an account's customer and the operator. The operator without an account
 * gets the list of every account's conversation (those with messages first, unread counts
 * beside them); with one, that conversation. A customer always gets their own. Opening a
 * conversation, and a message of the other side arriving while it is open, marks the other
 * side's messages read.
 */
export class MessagesView {
  constructor(ref) {
    this.ref = ref ? ref.toLowerCase() : null;
    this.side = session.me.role === "operator" ? "operator" : "customer";
    this.conversation = null;
    this.messages = new Map();
    this.loadedPages = 0;
    this.more = false;
    this.alive = true;
    this.loads = 0;
    this.timer = null;
    this.reading = 0;
  }

  mount(root) {
    this.root = root;
    if (this.side === "operator" && !this.ref) this.mountList();
    else this.mountConversation();
  }

  destroy() {
    this.alive = false;
    clearTimeout(this.timer);
  }

  onLive(message) {
    if (!this.alive) return;
    if (this.side === "operator" && !this.ref) {
      if (["hello", "message", "messages_read"].includes(message.type)) this.soon(() => this.loadList());
      return;
    }
    if (message.type === "hello") {
      this.soon(() => this.loadNewest());  // what was said while the socket was down
    } else if (message.type === "message" && message.message.account_ref === this.ref) {
      this.add([message.message]);
      this.render(true);
      if (message.message.author !== this.side) this.markRead();
    } else if (message.type === "messages_read" && message.account_ref === this.ref) {
      const now = message.read_at;
      for (const m of this.messages.values()) {
        if (m.author !== message.reader && m.id <= message.up_to_id && !m.read_at) m.read_at = now;
      }
      this.render(false);
    }
  }

  soon(action) {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => { if (this.alive) action(); }, RELOAD_DELAY_MS);
  }

  // ---- the operator's list of conversations

  mountList() {
    this.root.innerHTML = html`
      <h1>Messages</h1>
      <section class="panel">
        <h2>Conversations</h2>
        <div id="conversations-error"></div>
        <div class="table-wrap">
          <table class="data" id="conversations-table">
            <thead><tr><th>Account holder</th><th>Meter</th><th>Last message</th><th>When</th>
              <th class="num">Unread</th></tr></thead>
            <tbody><tr><td colspan="5" class="empty muted">Loading…</td></tr></tbody>
          </table>
        </div>
        <p class="muted small" id="conversations-count"></p>
      </section>`;
    this.loadList();
  }

  async loadList() {
    const load = ++this.loads;
    let page;
    try {
      page = await api(`/conversations?${query({ page_size: CONVERSATIONS_PAGE })}`);
    } catch (err) {
      if (this.alive) $("conversations-error").innerHTML = errorBox(err);
      return;
    }
    if (!this.alive || load !== this.loads) return;
    $("conversations-error").innerHTML = "";
    const rows = page.results.map((c) => {
      const meter = c.meters.length ? c.meters[0] : null;
      const last = c.last_message;
      const excerpt = last ? html`<span class="muted">${authorLabel(last, c)}:</span> ${last.body}` : "";
      return html`<tr data-account="${c.account_ref}" class="${c.unread ? "unread" : ""}">
        <td data-field="holder"><a href="#/messages/${c.account_ref}">${conversationTitle(c)}</a></td>
        <td data-field="meter">${meter ? html`${meter.name || shortAddress(meter.address)}` : html`<span
          class="muted">none</span>`}</td>
        <td data-field="last" class="excerpt">${last ? excerpt : html`<span class="muted">no messages yet</span>`}</td>
        <td data-field="when" class="nowrap">${last ? when(last.sent_at) : "—"}</td>
        <td data-field="unread" class="num">${c.unread ? badge(c.unread, "info") : ""}</td>
      </tr>`;
    });
    document.querySelector("#conversations-table tbody").innerHTML = rows.length ? html`${rows}`
      : html`<tr><td colspan="5" class="empty muted">No account is registered yet.</td></tr>`;
    $("conversations-count").textContent = page.count > page.results.length
      ? `The ${page.results.length} most recently active of ${page.count} accounts.` : "";
  }

  // ---- one conversation

  mountConversation() {
    const back = this.side === "operator" ? html`<a class="back" href="#/messages">← All conversations</a>`
      : html`<a class="back" href="#/meter/${session.me.meter}">← Your meter</a>`;
    this.root.innerHTML = html`
      ${back}
      <div id="conversation-head"><h1>Messages</h1></div>
      <section class="panel conversation">
        <div id="conversation-error"></div>
        <button type="button" id="older-messages" class="secondary" hidden>Older messages</button>
        <ol class="messages" id="message-list"><li class="empty muted">Loading…</li></ol>
        <form id="message-form" class="message-form">
          <label for="message-body">${this.side === "operator" ? "Reply" : "Write to the operator"}</label>
          <textarea id="message-body" rows="3" required></textarea>
          <div class="message-actions">
            <span class="muted small">Ctrl+Enter sends</span>
            <button type="submit" id="message-send">Send</button>
          </div>
        </form>
        <div id="message-result" role="status"></div>
      </section>`;
    $("message-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.send();
    });
    $("message-body").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        this.send();
      }
    });
    $("older-messages").addEventListener("click", () => this.loadOlder());
    this.open();
  }

  /** Find the conversation (a customer's own account, or the one named), then its newest messages. */
  async open() {
    let page;
    try {
      page = await api(`/conversations?${query({ account_ref: this.side === "operator" ? this.ref : undefined })}`);
    } catch (err) {
      if (this.alive) $("conversation-error").innerHTML = errorBox(err);
      return;
    }
    if (!this.alive) return;
    if (this.side === "customer") {
      this.conversation = page.results[0] || null;
      if (!this.conversation) {
        $("conversation-error").innerHTML = html`<p class="form-error">Your account is not known to the server yet;
          try again once your meter is registered.</p>`;
        return;
      }
      this.ref = this.conversation.account_ref;
    } else {
      this.conversation = page.results[0] || null;
    }
    this.renderHead();
    await this.loadNewest();
  }

  renderHead() {
    const c = this.conversation;
    if (this.side === "customer") {
      $("conversation-head").innerHTML = html`<h1>Messages</h1>
        <p class="muted">Your conversation with the operator about account
          <span class="address" title="${this.ref}">${shortAddress(this.ref)}</span>.</p>`;
      return;
    }
    const meters = c ? c.meters.map((m) => html`<a href="#/meter/${m.address}">${m.name || shortAddress(m.address)}</a>`)
      : [];
    $("conversation-head").innerHTML = html`<h1>${c ? conversationTitle(c) : shortAddress(this.ref)}</h1>
      <p class="meter-meta">Account <span class="address" title="${this.ref}">${shortAddress(this.ref)}</span>
        ${meters.length ? html` · meter ${meters.map((m, i) => html`${i ? ", " : ""}${m}`)}` : ""}</p>`;
  }

  path(tail = "") { return `/accounts/${this.ref}/messages${tail}`; }

  async loadNewest() {
    if (!this.ref) return;
    const load = ++this.loads;
    let page;
    try {
      page = await api(`${this.path()}?${query({ page_size: MESSAGES_PAGE })}`);
    } catch (err) {
      if (this.alive) $("conversation-error").innerHTML = errorBox(err);
      return;
    }
    if (!this.alive || load !== this.loads) return;
    $("conversation-error").innerHTML = "";
    this.add(page.results);
    if (!this.loadedPages) {
      this.loadedPages = 1;
      this.more = Boolean(page.next);
    }
    this.render(true);
    this.markRead();
  }

  async loadOlder() {
    let page;
    try {
      page = await api(`${this.path()}?${query({ page_size: MESSAGES_PAGE, page: this.loadedPages + 1 })}`);
    } catch (err) {
      if (this.alive) $("conversation-error").innerHTML = errorBox(err);
      return;
    }
    if (!this.alive) return;
    this.loadedPages += 1;
    this.more = Boolean(page.next);
    this.add(page.results);  // messages sent since push older ones down a page: the overlap is known already
    this.render(false);
  }

  /** Keep messages by id; a copy without a read mark (the answer to our own send, arriving after the
   *  live `messages_read`) never takes back a read mark already known. */
  add(messages) {
    for (const m of messages) {
      const known = this.messages.get(m.id);
      this.messages.set(m.id, known && known.read_at && !m.read_at ? { ...m, read_at: known.read_at } : m);
    }
  }

  render(toEnd) {
    const list = $("message-list");
    const ordered = [...this.messages.values()].sort((a, b) => a.id - b.id);
    $("older-messages").hidden = !this.more;
    if (!ordered.length) {
      list.innerHTML = html`<li class="empty muted">${this.side === "operator"
        ? "No messages yet. Write the first one below." : "No messages yet. Ask the operator anything below."}</li>`;
      return;
    }
    list.innerHTML = html`${ordered.map((m) => {
      const mine = m.author === this.side;
      const state = mine ? html` · <span data-field="state">${m.read_at ? "read" : "sent"}</span>` : "";
      return html`<li class="message ${mine ? "mine" : "theirs"}" data-id="${m.id}" data-author="${m.author}">
        <div class="message-meta muted small"><strong>${authorLabel(m, this.conversation)}</strong>
          · ${when(m.sent_at)}${state}</div>
        <div class="message-body">${m.body}</div>
      </li>`;
    })}`;
    if (toEnd) list.scrollTop = list.scrollHeight;
  }

  /** Mark the other side's messages shown read, up to the newest of them (once per newer message). */
  async markRead() {
    const theirs = [...this.messages.values()].filter((m) => m.author !== this.side && !m.read_at);
    if (!theirs.length) return;
    const upTo = Math.max(...theirs.map((m) => m.id));
    if (upTo <= this.reading) return;
    this.reading = upTo;
    try {
      await api(this.path("/read"), { method: "POST", body: { up_to_id: upTo } });
    } catch (err) {
      this.reading = 0;
      if (this.alive) $("conversation-error").innerHTML = errorBox(err);
      return;
    }
    const now = new Date().toISOString();
    for (const m of theirs) if (m.id <= upTo && !m.read_at) m.read_at = now;
    inbox.soon();
  }

  async send() {
    const box = $("message-body");
    const body = box.value;
    if (!body.trim() || !this.ref) return;
    const button = $("message-send");
    button.disabled = true;
    $("message-result").innerHTML = "";
    try {
      const sent = await api(this.path(), { method: "POST", body: { body } });
      if (!this.alive) return;
      box.value = "";
      this.add([sent]);
      this.render(true);
    } catch (err) {
      if (this.alive) $("message-result").innerHTML = errorBox(err);
    } finally {
      button.disabled = false;
      if (this.alive) box.focus();
    }
  }
}
