#!/usr/bin/env python3
"""A tiny Chrome DevTools Protocol driver for the dashboard test, standard library only.

Starts headless Chromium on a fresh profile, opens URL, and then answers one JSON command per
stdin line with one JSON line on stdout:
  {"cmd": "eval", "expr": "..."}            -> {"value": <the expression's JSON value>}
  {"cmd": "screenshot", "path": P, "width": W, "height": H} -> {"path": P, "bytes": N}
  {"cmd": "errors"}                         -> {"errors": [console errors, exceptions, failed loads]}
  {"cmd": "quit"}                           -> {} and exits (Chromium is killed)
Anything unexpected is {"error": "..."}. Usage: cdp.py CHROMIUM URL WIDTH HEIGHT
"""
import base64, json, os, shutil, socket, struct, subprocess, sys, tempfile, time, urllib.request

chrome, url, width, height = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
profile = tempfile.mkdtemp(prefix="keyshift-chromium-")
proc = subprocess.Popen([chrome, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
    "--no-first-run", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--disable-dev-shm-usage", "--user-data-dir=" + profile,
    "--remote-debugging-port=0", "--window-size=%d,%d" % (width, height), "about:blank"],
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n"); sys.stdout.flush()

def finish(code):
    proc.kill(); proc.wait(); shutil.rmtree(profile, ignore_errors=True); sys.exit(code)

port_file = os.path.join(profile, "DevToolsActivePort")
deadline = time.time() + 60
while not (os.path.exists(port_file) and open(port_file).read().strip()):
    if time.time() > deadline or proc.poll() is not None:
        out({"error": "chromium did not open its DevTools port"}); finish(1)
    time.sleep(0.1)
port = int(open(port_file).read().split()[0])
targets = json.load(urllib.request.urlopen("http://127.0.0.1:%d/json/list" % port))
ws_url = [t for t in targets if t["type"] == "page"][0]["webSocketDebuggerUrl"]
path = ws_url.split(str(port), 1)[1]
sock = socket.create_connection(("127.0.0.1", port))
key = base64.b64encode(os.urandom(16)).decode()
sock.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (path, port, key)).encode())
buf = b""
while b"\r\n\r\n" not in buf:
    buf += sock.recv(4096)
head, buf = buf.split(b"\r\n\r\n", 1)
if b" 101 " not in head.split(b"\r\n")[0]:
    out({"error": "websocket upgrade refused: %r" % head[:80]}); finish(1)

def read_exact(n):
    global buf
    while len(buf) < n:
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise EOFError("devtools closed the connection")
        buf += chunk
    data, buf = buf[:n], buf[n:]
    return data

def recv_message():
    parts = []
    while True:
        b0, b1 = read_exact(2)
        n = b1 & 0x7F
        if n == 126: n = struct.unpack(">H", read_exact(2))[0]
        elif n == 127: n = struct.unpack(">Q", read_exact(8))[0]
        payload = read_exact(n)
        if b0 & 0x0F in (0, 1, 2): parts.append(payload)
        if b0 & 0x80 and b0 & 0x0F != 9 and b0 & 0x0F != 10: return b"".join(parts)

def send_message(text):
    data = text.encode(); mask = os.urandom(4)
    n = len(data)
    header = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else
        bytes([0x80 | 126]) + struct.pack(">H", n) if n < 65536 else bytes([0x80 | 127]) + struct.pack(">Q", n))
    sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

errors, loaded, next_id = [], [False], [0]

def on_event(m):
    method, p = m.get("method"), m.get("params", {})
    if method == "Runtime.exceptionThrown":
        d = p["exceptionDetails"]
        errors.append("exception: " + d.get("exception", {}).get("description", d.get("text", "")))
    elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
        errors.append("console.%s: %s" % (p["type"], " ".join(str(a.get("value", a.get("description"))) for a in p.get("args", []))))
    elif method == "Log.entryAdded" and p["entry"].get("level") == "error":
        errors.append("log: %s %s" % (p["entry"].get("text"), p["entry"].get("url", "")))
    elif method == "Page.loadEventFired":
        loaded[0] = True

def call(method, **params):
    next_id[0] += 1; my = next_id[0]
    send_message(json.dumps({"id": my, "method": method, "params": params}))
    while True:
        m = json.loads(recv_message())
        if m.get("id") == my:
            if "error" in m: raise RuntimeError("%s: %s" % (method, m["error"]))
            return m.get("result", {})
        on_event(m)

def pump(seconds):
    sock.settimeout(seconds)
    try:
        while True: on_event(json.loads(recv_message()))
    except socket.timeout:
        pass
    finally:
        sock.settimeout(None)

try:
    for domain in ("Runtime", "Log", "Page"): call(domain + ".enable")
    call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=width < 600)
    started = time.time()
    call("Page.navigate", url=url)
    while not loaded[0]:
        if time.time() - started > 60: raise RuntimeError("the page did not load")
        on_event(json.loads(recv_message()))
    out({"loaded_ms": int((time.time() - started) * 1000)})
    for line in sys.stdin:
        cmd = json.loads(line)
        try:
            pump(0.05)
            if cmd["cmd"] == "eval":
                r = call("Runtime.evaluate", expression=cmd["expr"], returnByValue=True, awaitPromise=True)
                if "exceptionDetails" in r: out({"error": "eval: " + json.dumps(r["exceptionDetails"])[:400]})
                else: out({"value": r["result"].get("value")})
            elif cmd["cmd"] == "screenshot":
                call("Emulation.setDeviceMetricsOverride", width=cmd["width"], height=cmd["height"],
                     deviceScaleFactor=1, mobile=cmd["width"] < 600)
                pump(0.5)  # let the layout settle at the new size
                png = base64.b64decode(call("Page.captureScreenshot", format="png", captureBeyondViewport=False)["data"])
                open(cmd["path"], "wb").write(png)
                out({"path": cmd["path"], "bytes": len(png)})
            elif cmd["cmd"] == "errors":
                out({"errors": errors})
            elif cmd["cmd"] == "quit":
                out({}); break
            else:
                out({"error": "unknown command " + cmd["cmd"]})
        except Exception as e:  # report and keep serving the next command
            out({"error": "%s: %s" % (type(e).__name__, e)})
except Exception as e:
    out({"error": "%s: %s" % (type(e).__name__, e)}); finish(1)
finish(0)
