#!/usr/bin/env python3
"""An adapter of the presence conformance kit for `presence shell`, in Python 3 (standard
library only): it speaks the kit's JSON lines on its standard input and output
(docs/CONFORMANCE-PROTOCOL.md) and drives `presence shell`, the engine's text interface, in a
child process. It is how the kit checks a system written in another language: replace the
Shell class with your system's client and keep the rest.

    presence conform --exec "python3 conformance/adapters/presence_shell.py" conformance/traces
    presence conform --exec "python3 conformance/adapters/presence_shell.py" --cases 100 --ops all

Options:
    --presence PATH   the presence binary (default: $PRESENCE, else `presence` on the PATH)
    --mutate NAME     answer wrongly on purpose, to see the kit catch it:
                      cap      subscription lists one longer than configured (R4.3)
                      timeout  heartbeats time out a millisecond late (R2.4)
                      rate     the rate limit forgets calls after half its window (R6.3)
                      kick     kicked devices are not told (R5.5)
    --plain           leave out versions and causes (R5.6, R5.7 let a system do so)
    --misbehave HOW   break the protocol at the third request, to see the kit say so:
                      hang (never answer), die (exit), garbage (answer something that is
                      not a reply)
"""

import argparse
import io
import json
import os
import subprocess
import sys
import time

MUTANTS = ("cap", "timeout", "rate", "kick")
MISBEHAVIOURS = ("hang", "die", "garbage")
DECODER = json.JSONDecoder()


class Shell:
    """`presence shell` in a child process: one request line in, lines out up to the one that
    ends the answer (`ok ...`, `error ...` or `bad ...`)."""

    def __init__(self, presence):
        try:
            process = subprocess.Popen([presence, "shell"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        except OSError as e:
            sys.exit(f"cannot start `{presence} shell`: {e}")
        # Lines end at "\n" only: ids may hold any other character, escaped by the shell.
        self.requests = io.TextIOWrapper(process.stdin, encoding="utf-8", newline="\n", write_through=True)
        self.answers = io.TextIOWrapper(process.stdout, encoding="utf-8", newline="\n")

    def ask(self, words):
        """Sends one request (each word a JSON string unless it is a plain token) and returns
        the answer's lines, the last being ok, error or bad."""
        line = " ".join(words)
        self.requests.write(line + "\n")
        self.requests.flush()
        lines = []
        while True:
            answer = self.answers.readline()
            if not answer:
                sys.exit(f"presence shell ended while answering: {line}")
            answer = answer.rstrip("\n")
            lines.append(answer)
            if answer.startswith(("ok", "error ", "bad ")):
                if answer.startswith("bad "):
                    sys.exit(f"presence shell did not understand {line!r}: {answer}")
                return lines


def q(text):
    """A word for the shell: always a JSON string, so that any id survives."""
    return json.dumps(text)


def fields(line):
    """`kind key=value key="value" ...` as (kind, {key: value})."""
    kind, _, rest = line.partition(" ")
    values = {}
    i = 0
    while i < len(rest):
        if rest[i] == " ":
            i += 1
            continue
        eq = rest.index("=", i)
        key = rest[i:eq]
        i = eq + 1
        if i < len(rest) and rest[i] == '"':
            value, i = DECODER.raw_decode(rest, i)
        else:
            end = rest.find(" ", i)
            end = len(rest) if end < 0 else end
            value, i = rest[i:end], end
        values[key] = value
    return kind, values


class Adapter:
    def __init__(self, shell, mutate, plain):
        self.shell = shell
        self.mutate = mutate
        self.plain = plain

    def config(self, config):
        config = dict(config)
        if self.mutate == "cap":
            config["max_subscriptions"] += 1
        elif self.mutate == "timeout":
            config["heartbeat_timeout_ms"] += 1
        elif self.mutate == "rate":
            config["rate_limit_window_ms"] = max(1, config["rate_limit_window_ms"] // 2)
            if config["rate_limit_window_ms"] == 1:
                config["rate_limit_calls"] += 1
        words = ["config"] + [f"{key}={json.dumps(value)}" for key, value in config.items()]
        last = self.shell.ask(words)[-1]
        if last != "ok":
            sys.exit(f"presence shell refused the configuration: {last}")
        return {"ok": True}

    def op(self, request):
        op = request["op"]
        words = ["at", str(request["at"]), op]
        if op == "restart":
            words.append(request["sessions"])
        elif op == "disconnect_sessions":
            words += [q(request["owner"])] if "owner" in request else []
        elif op in ("add_friend", "remove_friend"):
            words += [q(request["user"]), q(request["friend"])]
        elif op != "tick":
            words += [q(request["user"]), q(request["device"])]
            if op == "login" and "owner" in request:
                words.append(q(request["owner"]))
            elif op == "set_status":
                words.append(q(request["custom"]))
            elif op in ("get_status", "subscribe", "unsubscribe"):
                words += [q(t) for t in request["targets"]]
        lines = self.shell.ask(words)
        *body, last = lines
        if last.startswith("error "):
            code, _, message = last[len("error "):].partition(" ")
            return {"error": int(code), "message": message, "notices": []}
        statuses, notices = [], []
        for line in body:
            kind, f = fields(line)
            if kind == "result":
                status = {"user": f["user"], "status": f["status"], "custom": f["custom"]}
                if not self.plain:
                    status["version"] = int(f["version"])
                statuses.append(status)
            elif kind == "notice":
                cause = {"kind": f["cause"]}
                if "cause_device" in f:
                    cause["device"] = f["cause_device"]
                notice = {"to": f["to"], "device": f["device"], "about": f["about"],
                          "status": f["status"], "custom": f["custom"]}
                if not self.plain:
                    notice["version"], notice["cause"] = int(f["version"]), cause
                notices.append(notice)
            elif kind == "kicked":
                if self.mutate != "kick":
                    notices.append({"to": f["to"], "device": f["device"], "kicked": True})
            else:
                sys.exit(f"presence shell answered {line!r} to {' '.join(words)}")
        reply = {"ok": True, "notices": notices}
        if op in ("get_status", "subscribe"):
            reply["statuses"] = statuses
        return reply

    def check(self, request):
        kind, user = request["check"], request["user"]
        lines = self.shell.ask(["check", kind, q(user)])
        *body, last = lines
        if last != "ok":
            sys.exit(f"presence shell answered {last!r} to the {kind} check of {user!r}")
        rows = [fields(line)[1] for line in body]
        reply = {"check": kind, "user": user}
        if kind == "status":
            reply["status"], reply["custom"] = rows[0]["status"], rows[0]["custom"]
        elif kind == "devices":
            reply["connected"] = sorted(r["device"] for r in rows if r["connected"] == "true")
            reply["disconnected"] = sorted(r["device"] for r in rows if r["connected"] == "false")
        elif kind == "subscriptions":
            reply["targets"] = [r["target"] for r in rows]
        elif kind == "friends":
            reply["friends"] = sorted(r["friend"] for r in rows)
        return reply

    def answer(self, request):
        if "config" in request:
            return self.config(request["config"])
        if "op" in request:
            return self.op(request)
        if "check" in request:
            return self.check(request)
        sys.exit(f"not a request of the kit: {request!r}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presence", default=os.environ.get("PRESENCE", "presence"))
    parser.add_argument("--mutate", choices=MUTANTS)
    parser.add_argument("--plain", action="store_true")
    parser.add_argument("--misbehave", choices=MISBEHAVIOURS)
    args = parser.parse_args()
    adapter = Adapter(Shell(args.presence), args.mutate, args.plain)
    requests = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", newline="\n")
    replies = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="\n")
    for count, line in enumerate(requests, start=1):
        if not line.strip():
            continue
        if args.misbehave and count == 3:
            if args.misbehave == "hang":
                while True:
                    time.sleep(60)
            if args.misbehave == "die":
                sys.exit("dying on purpose (--misbehave die)")
            replies.write("I am not a reply\n")
            replies.flush()
            continue
        reply = adapter.answer(json.loads(line))
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


if __name__ == "__main__":
    main()
