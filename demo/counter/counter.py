"""The lab's counter demo, one file for its three tiers (python3-minimal: sockets only).

  db   holds the hit counter:            "INCR\n" -> "<n>\n"                (port 7000, VIP)
  app  counts a hit in db, says who it is: GET / -> "app <host> hits <n>"  (port 8080, dnsrr)
  web  front end, asks one app replica:  GET / -> "web <host> -> app ..."  (port 80, published)
`web` resolves `app` to all its task addresses (dnsrr) and picks one per request, as a
client library would; `app` reaches `db` through its VIP, which ingressmesh programs.
"""
import random
import socket
import sys
import threading

HOST = socket.gethostname()


def serve(port, handle):
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", port))
    listener.listen(64)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def ask(address, port, data):
    with socket.create_connection((address, port), timeout=3) as conn:
        conn.sendall(data)
        answer = b""
        while True:
            chunk = conn.recv(4096)
            if not chunk:
                return answer
            answer += chunk


def http_reply(conn, status, text):
    body = (text + "\n").encode()
    conn.sendall(b"HTTP/1.0 %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % (status.encode(), len(body))
                 + body)


def http_body(answer):
    return answer.split(b"\r\n\r\n", 1)[-1].decode().strip()


def db_main():
    lock, hits = threading.Lock(), [0]

    def handle(conn):
        with conn:
            if conn.recv(64).startswith(b"INCR"):
                with lock:
                    hits[0] += 1
                    conn.sendall(b"%d\n" % hits[0])
    serve(7000, handle)


def app_main():
    def handle(conn):
        with conn:
            conn.recv(65536)
            try:
                hits = ask("db", 7000, b"INCR\n").decode().strip()
                http_reply(conn, "200 OK", f"app {HOST} hits {hits}")
            except OSError as err:
                http_reply(conn, "502 Bad Gateway", f"app {HOST}: db unreachable: {err}")
    serve(8080, handle)


def web_main():
    def handle(conn):
        with conn:
            conn.recv(65536)
            try:
                replicas = sorted({a[4][0] for a in socket.getaddrinfo("app", 8080, socket.AF_INET, socket.SOCK_STREAM)})
                answer = ask(random.choice(replicas), 8080, b"GET / HTTP/1.0\r\n\r\n")
                http_reply(conn, "200 OK", f"web {HOST} -> {http_body(answer)} ({len(replicas)} app replicas)")
            except OSError as err:
                http_reply(conn, "502 Bad Gateway", f"web {HOST}: app unreachable: {err}")
    serve(80, handle)


if __name__ == "__main__":
    {"db": db_main, "app": app_main, "web": web_main}[sys.argv[1]]()
