package etcdauth

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// authenticateMethod is the one RPC sent without a token.
const authenticateMethod = "/etcdserverpb.Auth/Authenticate"

// tokenMetadata is the gRPC metadata etcd reads the token from.
var tokenMetadata = rpctypes.TokenFieldNameGRPC

// New returns an etcd client of cfg whose requests share one auth token.
// With a username, it authenticates once before returning (so wrong
// credentials fail at once), sends the token with every request, and when
// etcd refuses the token (an etcd restart invalidates simple tokens; JWT
// tokens expire), the first request to see it fetches a new one while the
// others wait for that fetch and retry with its token: one Authenticate
// per client at a time, however many requests were in flight. Without a
// username the client is clientv3's own.
func New(cfg clientv3.Config) (*clientv3.Client, error) {
	cli, _, err := newClient(cfg)
	return cli, err
}

// newClient is New, also returning the token source (nil without a
// username), for tests.
func newClient(cfg clientv3.Config) (*clientv3.Client, *tokens, error) {
	if cfg.Username == "" {
		cli, err := clientv3.New(cfg)
		return cli, nil, err
	}
	t := &tokens{user: cfg.Username, password: cfg.Password, timeout: dialTimeout(cfg)}
	cfg.Username, cfg.Password = "", ""
	cfg.DialOptions = append(cfg.DialOptions[:len(cfg.DialOptions):len(cfg.DialOptions)],
		grpc.WithChainUnaryInterceptor(t.unary), grpc.WithChainStreamInterceptor(t.stream))
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, nil, err
	}
	t.auth = etcdserverpb.NewAuthClient(cli.ActiveConnection())
	ctx, cancel := context.WithTimeout(cli.Ctx(), t.timeout)
	defer cancel()
	if _, err := t.refresh(ctx, 0); err != nil {
		cli.Close()
		return nil, nil, err
	}
	return cli, t, nil
}

// dialTimeout bounds a token fetch: the client's dial timeout, or 5 s.
func dialTimeout(cfg clientv3.Config) time.Duration {
	if cfg.DialTimeout > 0 {
		return cfg.DialTimeout
	}
	return 5 * time.Second
}

// tokens is one client's auth token and the single fetch of a new one.
type tokens struct {
	user, password string
	auth           etcdserverpb.AuthClient
	// timeout bounds a fetch that a stream's refusal starts.
	timeout time.Duration

	mu sync.Mutex
	// token is the current token ("" while auth is off); gen counts the
	// tokens fetched, so that a request that saw gen's token refused asks
	// for a new one only if nobody fetched it meanwhile.
	token string
	gen   uint64
	// fetching, when set, is closed when the fetch under way ends.
	fetching chan struct{}
	fetchErr error

	// authenticates counts Authenticate calls made.
	authenticates atomic.Int64
}

// current returns the token to send and its generation.
func (t *tokens) current() (string, uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.token, t.gen
}

// refresh returns a token newer than generation seen: the one another
// request already fetched, the one being fetched (waiting for it), or one
// it fetches itself.
func (t *tokens) refresh(ctx context.Context, seen uint64) (string, error) {
	t.mu.Lock()
	for {
		if t.gen > seen {
			tok := t.token
			t.mu.Unlock()
			return tok, nil
		}
		if t.fetching == nil {
			break
		}
		wait := t.fetching
		t.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return "", ctx.Err()
		}
		t.mu.Lock()
		if t.gen <= seen && t.fetchErr != nil {
			err := t.fetchErr
			t.mu.Unlock()
			return "", err
		}
	}
	done := make(chan struct{})
	t.fetching, t.fetchErr = done, nil
	t.mu.Unlock()

	t.authenticates.Add(1)
	tok, err := t.authenticate(ctx)

	t.mu.Lock()
	defer t.mu.Unlock()
	t.fetching = nil
	close(done)
	if err != nil {
		t.fetchErr = err
		return "", err
	}
	t.token = tok
	t.gen++
	return tok, nil
}

// authenticate asks etcd for a token; auth being off is no token.
func (t *tokens) authenticate(ctx context.Context) (string, error) {
	resp, err := t.auth.Authenticate(ctx, &etcdserverpb.AuthenticateRequest{Name: t.user, Password: t.password})
	if err != nil {
		if errors.Is(rpctypes.Error(err), rpctypes.ErrAuthNotEnabled) {
			return "", nil
		}
		return "", rpctypes.Error(err)
	}
	return resp.Token, nil
}

// refused reports whether err says etcd does not accept the token sent.
func refused(err error) bool {
	err = rpctypes.Error(err)
	return errors.Is(err, rpctypes.ErrInvalidAuthToken) || errors.Is(err, rpctypes.ErrAuthOldRevision) ||
		errors.Is(err, rpctypes.ErrUserEmpty)
}

// refusedReason reports whether a canceled watch's reason says etcd did
// not accept the token.
func refusedReason(reason string) bool {
	for _, e := range []error{rpctypes.ErrGRPCInvalidAuthToken, rpctypes.ErrGRPCAuthOldRevision, rpctypes.ErrGRPCUserEmpty} {
		if strings.Contains(reason, rpctypes.ErrorDesc(e)) {
			return true
		}
	}
	return false
}

func withToken(ctx context.Context, tok string) context.Context {
	if tok == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, tokenMetadata, tok)
}

// unary sends the token with a request, and once more with a new token
// when etcd refused it.
func (t *tokens) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if method == authenticateMethod {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	tok, gen := t.current()
	err := invoker(withToken(ctx, tok), method, req, reply, cc, opts...)
	if err == nil || !refused(err) {
		return err
	}
	if tok, err = t.refresh(ctx, gen); err != nil {
		return err
	}
	return invoker(withToken(ctx, tok), method, req, reply, cc, opts...)
}

// stream opens a stream with the token. A stream's token is fixed when it
// opens: when etcd refuses it (an error, or a watch canceled for it), a
// new token is fetched before the error reaches the caller, whose next
// stream carries it.
func (t *tokens) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	tok, gen := t.current()
	s, err := streamer(withToken(ctx, tok), desc, cc, method, opts...)
	if err != nil {
		if refused(err) {
			t.refreshAfter(gen)
		}
		return nil, err
	}
	return &tokenStream{ClientStream: s, t: t, gen: gen}, nil
}

// refreshAfter fetches a token newer than gen for a stream whose token was
// refused, bounded by the fetch timeout rather than the stream's context,
// which is often over by then.
func (t *tokens) refreshAfter(gen uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), t.timeout)
	defer cancel()
	t.refresh(ctx, gen)
}

// tokenStream notices etcd refusing its token.
type tokenStream struct {
	grpc.ClientStream
	t   *tokens
	gen uint64
}

func (s *tokenStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	switch {
	case err != nil && refused(err):
		s.t.refreshAfter(s.gen)
	case err == nil:
		if wr, ok := m.(*etcdserverpb.WatchResponse); ok && wr.Canceled && refusedReason(wr.CancelReason) {
			s.t.refreshAfter(s.gen)
		}
	}
	return err
}
