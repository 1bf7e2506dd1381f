package etcdapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	gw "github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	etcdgw "go.etcd.io/etcd/api/v3/etcdserverpb/gw"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/encoding/protojson"
)

// Listener serves the etcd API on one address: gRPC (HTTP/2) and the /v3
// JSON gateway with /version and /health (HTTP/1.1), told apart by the
// first bytes of each connection.
type Listener struct {
	lis    net.Listener
	grpc   *grpc.Server
	http   *http.Server
	conn   *grpc.ClientConn
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	onClose []func()
}

// OnClose registers fn to run when the listener closes.
func (l *Listener) OnClose(fn func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.onClose = append(l.onClose, fn)
}

// Listen starts serving s on addr ("127.0.0.1:0" lets the kernel choose
// the port).
func (s *Server) Listen(addr string, opts ...grpc.ServerOption) (*Listener, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return s.Serve(lis, opts...)
}

// Serve serves s on lis, which it closes when the Listener closes.
func (s *Server) Serve(lis net.Listener, opts ...grpc.ServerOption) (*Listener, error) {
	var err error
	// etcd clients ping every few seconds (etcdctl every 2 s); gRPC's
	// default policy would end their connections for it.
	opts = append([]grpc.ServerOption{grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: time.Second, PermitWithoutStream: true})}, opts...)
	l := &Listener{lis: lis, grpc: grpc.NewServer(opts...)}
	s.Register(l.grpc)
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	l.conn, err = grpc.NewClient(loopback(lis.Addr()), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		lis.Close()
		return nil, err
	}
	mux := gw.NewServeMux(gw.WithMarshalerOption(gw.MIMEWildcard, &gw.HTTPBodyMarshaler{Marshaler: &gw.JSONPb{
		MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true},
		UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: true},
	}}))
	for _, register := range []func(context.Context, *gw.ServeMux, *grpc.ClientConn) error{
		etcdgw.RegisterKVHandler, etcdgw.RegisterWatchHandler, etcdgw.RegisterLeaseHandler,
		etcdgw.RegisterClusterHandler, etcdgw.RegisterMaintenanceHandler, etcdgw.RegisterAuthHandler,
	} {
		if err := register(ctx, mux, l.conn); err != nil {
			l.Close()
			return nil, err
		}
	}
	h := http.NewServeMux()
	h.Handle("/v3/", mux)
	h.HandleFunc("/version", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"etcdserver": etcdVersion, "etcdcluster": clusterVersion})
	})
	h.HandleFunc("/health", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"health": "true", "reason": ""})
	})
	l.http = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: zap.NewStdLog(s.cfg.Logger)}
	grpcL, httpL := split(lis)
	l.wg.Add(2)
	go func() { defer l.wg.Done(); l.grpc.Serve(grpcL) }()
	go func() { defer l.wg.Done(); l.http.Serve(httpL) }()
	return l, nil
}

// Addr is the address the listener serves on.
func (l *Listener) Addr() string { return l.lis.Addr().String() }

// Close stops serving and ends every open stream.
func (l *Listener) Close() {
	l.cancel()
	l.lis.Close()
	if l.http != nil {
		l.http.Close()
	}
	l.grpc.Stop()
	l.conn.Close()
	l.wg.Wait()
	l.mu.Lock()
	fns := l.onClose
	l.onClose = nil
	l.mu.Unlock()
	for _, fn := range fns {
		fn()
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// loopback is addr with an unspecified host replaced by 127.0.0.1.
func loopback(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return addr.String()
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// http2Preface starts every HTTP/2 connection, and so every gRPC one.
var http2Preface = []byte("PRI * HTTP/2.0")

// split hands each connection of lis to the gRPC listener when it starts
// with the HTTP/2 preface, else to the HTTP/1.1 one.
func split(lis net.Listener) (grpcL, httpL net.Listener) {
	g := &childListener{parent: lis, conns: make(chan net.Conn), done: make(chan struct{})}
	h := &childListener{parent: lis, conns: make(chan net.Conn), done: g.done}
	var once sync.Once
	closeAll := func() { once.Do(func() { close(g.done) }) }
	g.close, h.close = closeAll, closeAll
	go func() {
		defer closeAll()
		for {
			c, err := lis.Accept()
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					continue
				}
				return
			}
			go func() {
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				buf := make([]byte, len(http2Preface))
				n, _ := readFull(c, buf)
				c.SetReadDeadline(time.Time{})
				pc := &peekedConn{Conn: c, peeked: buf[:n]}
				to := h
				if bytes.Equal(buf[:n], http2Preface) {
					to = g
				}
				select {
				case to.conns <- pc:
				case <-g.done:
					c.Close()
				}
			}()
		}
	}()
	return g, h
}

// readFull reads len(buf) bytes, or fewer when the connection ends or
// sends a line first (a short HTTP/1.1 request line still routes).
func readFull(c net.Conn, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := c.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
		if !bytes.HasPrefix(http2Preface, buf[:n]) {
			return n, nil
		}
	}
	return n, nil
}

type childListener struct {
	parent net.Listener
	conns  chan net.Conn
	done   chan struct{}
	close  func()
}

func (l *childListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *childListener) Close() error {
	l.close()
	return nil
}

func (l *childListener) Addr() net.Addr { return l.parent.Addr() }

// peekedConn replays the bytes read to route the connection.
type peekedConn struct {
	net.Conn
	peeked []byte
}

func (c *peekedConn) Read(b []byte) (int, error) {
	if len(c.peeked) > 0 {
		n := copy(b, c.peeked)
		c.peeked = c.peeked[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}
