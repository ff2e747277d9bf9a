# Helpers the benchmark scripts source.

# A TCP port free on loopback now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Wait until something listens on loopback `port`; fails (1) if process `pid`
# exits first or nothing listens within 30 s.
wait_port() { # port pid
    for _ in $(seq 1 600); do
        if ! kill -0 "$2" 2>/dev/null; then echo "process $2 exited before listening on $1" >&2; return 1; fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "port $1 never opened" >&2
    return 1
}
