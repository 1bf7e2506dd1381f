package auth

import (
	"context"
	"errors"
	"fmt"

	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/confetti-io/confetti/internal/rpcerr"
)

// ServerOptions are the gRPC server options that check every RPC: the
// unary and the stream interceptor.
func (a *Authenticator) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(a.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(a.StreamServerInterceptor()),
	}
}

// UnaryServerInterceptor verifies the caller's key, applies the method's
// policy to the request, and passes the caller to the handler in its
// context (FromContext).
func (a *Authenticator) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if isExempt(info.FullMethod) {
			return handler(ctx, req)
		}
		p, err := a.Authenticate(ctx)
		if err == nil {
			err = a.Authorize(p, info.FullMethod, req)
		}
		if err != nil {
			a.refused(info.FullMethod, p, err)
			return nil, rpcerr.Status(err)
		}
		return handler(NewContext(ctx, p), req)
	}
}

// StreamServerInterceptor verifies the caller's key and role when a stream
// opens, checks the tenant of every message the client sends, and ends the
// stream with Unauthenticated when the key is revoked while it is open.
func (a *Authenticator) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if isExempt(info.FullMethod) {
			return handler(srv, ss)
		}
		p, err := a.Authenticate(ss.Context())
		var r rule
		if err == nil {
			r, err = a.authorizeMethod(p, info.FullMethod)
		}
		if err != nil {
			a.refused(info.FullMethod, p, err)
			return rpcerr.Status(err)
		}
		ctx, cancel := context.WithCancelCause(NewContext(ss.Context(), p))
		defer cancel(nil)
		untrack := a.track(p.KeyID, cancel)
		defer untrack()
		cs := &checkedStream{ServerStream: ss, ctx: ctx, cancel: cancel, a: a, p: p, r: r, method: info.FullMethod}
		err = handler(srv, cs)
		// A stream ended by a revocation or a refused message reports
		// that, whatever the handler made of its cancelled context.
		if ended := cs.ended(); ended != nil {
			return ended
		}
		return err
	}
}

func (a *Authenticator) refused(fullMethod string, p Principal, err error) {
	if ce := a.lg.Check(zap.DebugLevel, "request refused"); ce != nil {
		ce.Write(zap.String("method", methodName(fullMethod)), zap.String("key-id", p.KeyID), zap.Error(err))
	}
}

// checkedStream applies the policy to every message a client sends.
type checkedStream struct {
	grpc.ServerStream
	ctx    context.Context
	cancel context.CancelCauseFunc
	a      *Authenticator
	p      Principal
	r      rule
	method string
}

func (s *checkedStream) Context() context.Context { return s.ctx }

// SendMsg refuses to send once the stream has been ended by a revocation
// or a refused message, for handlers that do not watch the context.
func (s *checkedStream) SendMsg(m any) error {
	if err := s.ended(); err != nil {
		return err
	}
	return s.ServerStream.SendMsg(m)
}

// RecvMsg checks every message the client sends. A handler blocked in
// RecvMsg wakes only when a message arrives; handlers of long-lived
// streams watch Context to learn of a revocation at once.
func (s *checkedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if err := s.ended(); err != nil {
		return err
	}
	if err := s.a.authorizeMessage(s.p, s.method, s.r, m, true); err != nil {
		s.a.refused(s.method, s.p, err)
		s.cancel(err)
		return rpcerr.Status(err)
	}
	return nil
}

// ended returns the status that ended the stream early, if any.
func (s *checkedStream) ended() error {
	if cause := context.Cause(s.ctx); errors.Is(cause, ErrRevoked) || errors.Is(cause, ErrPermissionDenied) {
		return rpcerr.Status(cause)
	}
	return nil
}

// keyStreams are the open streams of one key.
type keyStreams struct {
	cancels map[*context.CancelCauseFunc]struct{}
	// done stops the goroutine following the key when its last stream
	// ends.
	done chan struct{}
}

// track registers an open stream of key id, to be cancelled if the key is
// revoked; untrack removes it. One goroutine per key with open streams
// follows the key table.
func (a *Authenticator) track(id string, cancel context.CancelCauseFunc) (untrack func()) {
	handle := &cancel
	a.mu.Lock()
	ks, ok := a.streams[id]
	if !ok {
		ks = &keyStreams{cancels: map[*context.CancelCauseFunc]struct{}{}, done: make(chan struct{})}
		a.streams[id] = ks
		go a.follow(id, ks)
	}
	ks.cancels[handle] = struct{}{}
	a.mu.Unlock()
	return func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		delete(ks.cancels, handle)
		if len(ks.cancels) == 0 && a.streams[id] == ks {
			delete(a.streams, id)
			close(ks.done)
		}
	}
}

// follow waits for key id to leave the table, then cancels its streams.
func (a *Authenticator) follow(id string, ks *keyStreams) {
	for {
		changed := a.keys.Changed()
		if _, ok := a.keys.APIKey(id); !ok {
			break
		}
		select {
		case <-changed:
		case <-ks.done:
			return
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.streams[id] == ks {
		delete(a.streams, id)
		close(ks.done)
	}
	if len(ks.cancels) > 0 {
		a.lg.Info("ending the streams of a revoked API key", zap.String("key-id", id), zap.Int("streams", len(ks.cancels)))
	}
	err := fmt.Errorf("%w: key %s was revoked while the stream was open; %s", ErrRevoked, id, howToGetAKey)
	for c := range ks.cancels {
		(*c)(err)
	}
	ks.cancels = map[*context.CancelCauseFunc]struct{}{}
}
