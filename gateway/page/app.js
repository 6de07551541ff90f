// The presence page: one WebSocket at /ws speaking docs/PROTOCOL.md. Plain JavaScript, no
// build step. For each user it keeps the status with the highest version it has seen, so a
// reply and a notice that arrive in either order never leave it showing an older status.
"use strict";

const HEARTBEAT_MS = 60000; // browsers cannot send WebSocket pings: an explicit heartbeat op
const $ = (id) => document.getElementById(id);

let socket = null;
let nextId = 1;
let me = null;
const pending = new Map(); // request id -> callback(reply)
const known = new Map(); // user -> {status, custom, version}
const watched = []; // users shown in the list, in the order they were subscribed
let heartbeat = null;

function log(text) {
  $("log").textContent = text;
}

function request(op, fields, onReply) {
  if (!socket || socket.readyState !== WebSocket.OPEN) {
    log("not connected");
    return;
  }
  const id = nextId++;
  pending.set(id, onReply || ((reply) => { if (!reply.ok) log(describe(reply)); }));
  socket.send(JSON.stringify(Object.assign({ id, op }, fields)));
}

function describe(reply) {
  return `${reply.name} (${reply.code}): ${reply.message}`;
}

// R5.6: keep the newest version of each user's status.
function learn(status) {
  const had = known.get(status.user);
  if (had && had.version >= status.version) return;
  known.set(status.user, { status: status.status, custom: status.custom, version: status.version });
  render(status.user);
}

function render(user) {
  const status = known.get(user);
  if (!status) return;
  if (me && user === me.user) {
    const badge = $("me-status");
    badge.textContent = status.status;
    badge.className = "badge " + status.status;
    $("me-custom").textContent = status.custom;
  }
  const row = document.querySelector(`#watch-list tr[data-user="${CSS.escape(user)}"]`);
  if (row) {
    const badge = row.querySelector(".badge");
    badge.textContent = status.status;
    badge.className = "badge " + status.status;
    row.querySelector(".custom").textContent = status.custom;
    row.querySelector(".version").textContent = "v" + status.version;
  }
}

function addRow(user) {
  if (watched.includes(user)) return;
  watched.push(user);
  const row = document.createElement("tr");
  row.dataset.user = user;
  const name = document.createElement("td");
  name.textContent = user;
  const badgeCell = document.createElement("td");
  const badge = document.createElement("span");
  badge.className = "badge UNKNOWN";
  badge.textContent = "…";
  badgeCell.appendChild(badge);
  const custom = document.createElement("td");
  custom.className = "custom";
  const version = document.createElement("td");
  version.className = "version";
  row.append(name, badgeCell, custom, version);
  $("watch-list").appendChild(row);
  $("watch-empty").classList.add("hidden");
  render(user);
}

function removeRows(users) {
  for (const user of users) {
    const at = watched.indexOf(user);
    if (at >= 0) watched.splice(at, 1);
    const row = document.querySelector(`#watch-list tr[data-user="${CSS.escape(user)}"]`);
    if (row) row.remove();
  }
  if (watched.length === 0) $("watch-empty").classList.remove("hidden");
}

function targetsFromInput() {
  return $("targets").value.split(/[\s,]+/).filter((t) => t.length > 0);
}

function onMessage(event) {
  let message;
  try {
    message = JSON.parse(event.data);
  } catch (e) {
    log("the server sent something that is not JSON");
    return;
  }
  if (message.notice) {
    learn(message.notice);
  } else if (message.kicked) {
    log("kicked: this account logged in on another device");
  } else if ("id" in message) {
    const callback = pending.get(message.id);
    pending.delete(message.id);
    if (callback) callback(message);
    else if (!message.ok) log(describe(message));
  }
}

function connect(token, device) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  socket = new WebSocket(`${scheme}//${location.host}/ws`);
  $("connection").textContent = "connecting…";
  socket.onopen = () => {
    $("connection").textContent = "connected";
    request("login", { token, device }, (reply) => {
      if (!reply.ok) {
        log(describe(reply));
        return;
      }
      me = { user: reply.user, device: reply.device };
      log("");
      $("me-user").textContent = `${me.user} on ${me.device}`;
      $("login-box").classList.add("hidden");
      $("me-box").classList.remove("hidden");
      $("watch-box").classList.remove("hidden");
      render(me.user);
      heartbeat = setInterval(() => request("heartbeat", {}), HEARTBEAT_MS);
    });
  };
  socket.onmessage = onMessage;
  socket.onclose = (event) => {
    clearInterval(heartbeat);
    const reason = event.reason ? `: ${event.reason}` : "";
    $("connection").textContent = `closed (${event.code}${reason})`;
    me = null;
    $("login-box").classList.remove("hidden");
    $("me-box").classList.add("hidden");
  };
}

$("login").onclick = () => {
  const token = $("token").value.trim();
  const device = $("device").value.trim();
  if (socket) socket.close();
  connect(token, device);
};

$("set-custom").onclick = () => request("set_status", { custom: $("custom").value });

$("logout").onclick = () => request("logout", {});

$("subscribe").onclick = () => {
  const targets = targetsFromInput();
  if (targets.length === 0) return;
  request("subscribe", { targets }, (reply) => {
    if (!reply.ok) {
      log(describe(reply));
      return;
    }
    log("");
    for (const status of reply.statuses) {
      addRow(status.user);
      learn(status);
    }
    $("targets").value = "";
  });
};

$("unsubscribe").onclick = () => {
  const targets = targetsFromInput();
  request("unsubscribe", { targets }, (reply) => {
    if (!reply.ok) {
      log(describe(reply));
      return;
    }
    removeRows(targets.length > 0 ? targets : watched.slice());
    $("targets").value = "";
  });
};
