#!/usr/bin/env python3
"""Follow a Confetti subscription over Server-Sent Events, standard library only.

usage: CONFETTI_API_KEY=cft_... sse_subscribe.py TENANT PREFIX URL [URL ...]
Prints the state, then each change; when a stream breaks or goes silent it
resumes on the next cache node from the last event id: no gap, no duplicate.
"""
import http.client, json, os, sys, time, urllib.parse

tenant, prefix, urls = sys.argv[1], sys.argv[2], sys.argv[3:]
last_id, node, state = None, 0, {}
while True:
    url = urllib.parse.urlsplit(urls[node % len(urls)])
    try:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)  # a bookmark comes every 2 s
        headers = {"X-API-Key": os.environ["CONFETTI_API_KEY"]} | ({"Last-Event-ID": last_id} if last_id else {})
        conn.request("GET", f"/v1/tenants/{tenant}/subscribe?" + urllib.parse.urlencode({"prefix": prefix}), headers=headers)
        resp = conn.getresponse()
        if resp.status != 200:
            sys.exit(f"{resp.status}: {resp.read().decode()}")
        event, data, pending = {}, [], {}
        for line in (raw.decode().rstrip("\r\n") for raw in resp):
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if line:
                data.append(value) if field == "data" else event.update({field: value})
                continue
            kind, msg = event.get("event"), json.loads("\n".join(data) or "{}")
            if kind == "reset":
                pending.update({kv["key"]: kv.get("value") for kv in msg["kvs"]})
                if msg["last"]:
                    state, pending = pending, {}
                    print("STATE", json.dumps(state, sort_keys=True), flush=True)
            for ev in [ev for txn in msg["txns"] for ev in txn["events"]] if kind == "events" else []:
                key, value = ev["kv"]["key"], ev["kv"].get("value")
                state.pop(key, None) if ev["type"] == "DELETE" else state.update({key: value})
                print(ev["type"], key, value or "", flush=True)
            last_id, event, data = event.get("id", last_id), {}, []
    except (OSError, http.client.HTTPException) as err:
        print(f"{urls[node % len(urls)]}: {err!r}; resuming on the next node", file=sys.stderr, flush=True)
        node += 1
        time.sleep(0.5)
