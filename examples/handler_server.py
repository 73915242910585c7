"""The seed's request_handler as one chain: accept, open, read, send, close (run as root)."""
import os, socket
import sakura_uring as su

def request_handler(chain, listener, path):
    conn = chain.accept(listener)            # the client lands in a slot
    f = chain.openat(path)
    body = chain.read(f, os.path.getsize(path))
    chain.send(conn, b"HTTP/1.0 200 OK\r\n\r\n")
    chain.send(conn, body)                   # the bytes read, straight from the buffer
    chain.close(f)
    chain.close(conn)

with su.Ring(sqpoll=True) as ring, socket.create_server(("127.0.0.1", 0)) as srv:
    fut = su.sakura_call(ring, request_handler, srv, "/etc/hostname")
    with socket.create_connection(srv.getsockname()) as client:
        print(client.recv(4096))
    fut.result().raise_for_error()
