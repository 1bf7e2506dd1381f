package serve

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"go.uber.org/zap"
)

// GatewayFunc builds an HTTP handler that forwards requests to the gRPC
// server listening on grpcAddr (an HTTP/JSON gateway such as the shard
// proxy's). release, if not nil, frees what the handler holds (its client
// connection); Stop calls it once the gateway and the gRPC server have
// stopped.
type GatewayFunc func(grpcAddr string) (h http.Handler, release func(), err error)

// gateway is an HTTP server beside the gRPC server that forwards to it.
type gateway struct {
	addr    string
	build   GatewayFunc
	lis     net.Listener
	srv     *http.Server
	release func()
}

// SetGateway makes Start serve the handler built by build on addr
// (host:port; port 0 lets the kernel choose) beside the gRPC server.
// Empty addr means no gateway. Call it before Start. Stop shuts the
// gateway down before the gRPC server, so that the requests it is
// forwarding finish first.
func (s *Server) SetGateway(addr string, build GatewayFunc) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.stopped:
		return ErrStopped
	case s.started:
		return ErrStarted
	case addr == "":
		s.gw = nil
		return nil
	case build == nil:
		return errors.New("serve: a gateway needs a handler")
	}
	s.gw = &gateway{addr: addr, build: build}
	return nil
}

// listen binds the gateway's address and builds its handler for the gRPC
// server on grpcAddr; it returns the bound address.
func (g *gateway) listen(grpcAddr string) (string, error) {
	lis, err := net.Listen("tcp", g.addr)
	if err != nil {
		return "", fmt.Errorf("serve: listen on %s: %w", g.addr, err)
	}
	h, release, err := g.build(grpcAddr)
	if err != nil {
		lis.Close()
		return "", fmt.Errorf("serve: gateway on %s: %w", g.addr, err)
	}
	g.lis, g.release = lis, release
	g.srv = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	return lis.Addr().String(), nil
}

// serveGateway serves the gateway bound on addr until Stop.
func (s *Server) serveGateway(addr string) {
	s.lg.Info("http gateway listening", zap.String("addr", addr))
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.gw.srv.Serve(s.gw.lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.lg.Error("http gateway failed", zap.String("addr", addr), zap.Error(err))
			s.errc <- fmt.Errorf("serve: http gateway on %s: %w", addr, err)
		}
	}()
}

// shutdown stops the gateway, waiting for running requests until ctx is
// done, then closing their connections.
func (g *gateway) shutdown(ctx context.Context) {
	if ctx.Err() != nil || g.srv.Shutdown(ctx) != nil {
		g.srv.Close()
	}
}

// done releases what the handler holds, once.
func (g *gateway) done() {
	if g.release != nil {
		g.release()
		g.release = nil
	}
}

// LoopbackTarget turns a bound listen address into one this host can
// dial: an empty or unspecified host becomes 127.0.0.1.
func LoopbackTarget(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
