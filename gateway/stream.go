package gateway

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/wire"
)

// apiKeyMetadata is the gRPC metadata that carries the API key.
const apiKeyMetadata = "x-api-key"

// healthyStream is how long a stream must have lasted for its failure to
// count as the first of a new series (backoff from BackoffInitial again).
const healthyStream = 10 * time.Second

// defaultBookmarkInterval is the longest a node may leave a subscription
// without a message (the contract's bound), assumed until the node's
// response header names its own interval.
const defaultBookmarkInterval = 10 * time.Second

// silentIntervals is how many bookmark intervals without a message make a
// stream dead: the node is frozen or cut off.
const silentIntervals = 3

// errSilent ends a stream that heard nothing for silentIntervals.
var errSilent = errors.New("the cache node sent nothing, not even a bookmark")

// bookmarkInterval reads the node's bookmark interval from a stream's
// response header, or the contract's bound.
func bookmarkInterval(md metadata.MD) time.Duration {
	if v := md.Get(wire.BookmarkIntervalHeader); len(v) > 0 {
		if d, err := time.ParseDuration(v[0]); err == nil && d > 0 {
			return d
		}
	}
	return defaultBookmarkInterval
}

// backoffWindow is the window of a reconnect after attempts failed
// attempts in a row: initial doubled per attempt, capped at max.
func backoffWindow(initial, max time.Duration, attempts int) time.Duration {
	w := initial
	for i := 0; i < attempts && w < max; i++ {
		w *= 2
	}
	return min(w, max)
}

// jitter is a uniformly random duration in [0, w) (full jitter).
func jitter(w time.Duration) time.Duration {
	if w <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(w)))
}

// readySpread is the window over which clients that waited out an outage
// of every node spread their subscriptions once a node is back.
const readySpread = 500 * time.Millisecond

// connectParams redial a lost node quickly: a fleet notices a restarted
// node within about a second, whatever the outage lasted.
var connectParams = grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
	MinConnectTimeout: 2 * time.Second,
}

// run keeps a stream open until Close: on every failure it moves to the
// next endpoint and waits a jittered backoff first, so that a fleet that
// lost the same node does not come back all at once. A stream that failed
// because no connection could be made waits for whichever comes first:
// its backoff, or a connection to any node becoming ready, which ends the
// series of failures (the fleet is not punished for an outage it waited
// out) and subscribes after a short jitter.
func (c *Client) run() {
	defer c.wg.Done()
	eps := c.cfg.Endpoints
	i := rand.IntN(len(eps))
	attempts := 0
	fresh, unreachable := false, false
	for n := 0; ; n++ {
		if n > 0 {
			w := c.jitter(backoffWindow(c.cfg.BackoffInitial, c.cfg.BackoffMax, attempts))
			wctx, stopWatching := context.WithCancel(c.ctx)
			var ready <-chan int
			if unreachable {
				ready = c.conns.anyReady(wctx, eps)
			}
			t := time.NewTimer(w)
			select {
			case <-c.ctx.Done():
				t.Stop()
				stopWatching()
				return
			case <-t.C:
			case j := <-ready:
				t.Stop()
				attempts, i = 0, j
				t = time.NewTimer(c.jitter(min(readySpread, c.cfg.BackoffInitial)))
				select {
				case <-c.ctx.Done():
					t.Stop()
					stopWatching()
					return
				case <-t.C:
				}
			}
			stopWatching()
			c.mu.Lock()
			c.stats.Reconnects++
			c.mu.Unlock()
		}
		began := time.Now()
		progressed, refused, err := c.session(c.ctx, eps[i], fresh)
		unreachable = !progressed && c.conns.unreachable(eps[i])
		// A resumed stream with nothing new is silent: one the node held
		// for a while was healthy too.
		progressed = progressed || time.Since(began) >= healthyStream
		c.mu.Lock()
		c.stats.Endpoint = ""
		if c.lostAt.IsZero() {
			c.lostAt = time.Now()
		}
		c.mu.Unlock()
		if c.ctx.Err() != nil {
			return
		}
		if progressed {
			attempts = 0
		} else {
			attempts++
		}
		fresh = refused
		if err == nil {
			err = errors.New("the cache node ended the stream")
		}
		c.noteError(err)
		next := eps[(i+1)%len(eps)]
		lg := c.lg.With(zap.String("endpoint", eps[i]), zap.String("next", next), zap.Error(err))
		switch {
		case refused:
			lg.Warn("resume token refused; subscribing afresh (the view is served until the reset)")
		case status.Code(err) == codes.Unauthenticated || status.Code(err) == codes.PermissionDenied:
			lg.Error("subscription refused: check the API key (a reader key of the tenant is enough); retrying")
		case status.Code(err) == codes.NotFound || status.Code(err) == codes.InvalidArgument:
			lg.Error("subscription refused: check the tenant and prefixes; retrying")
		default:
			lg.Warn("subscription interrupted; serving the view from memory and reconnecting")
		}
		i = (i + 1) % len(eps)
	}
}

// connect returns a connection to endpoint: Config.Dial's, or the
// client's own, which it keeps until Close.
func (c *Client) connect(endpoint string) (grpc.ClientConnInterface, func(), error) {
	if c.cfg.Dial != nil {
		cc, err := c.cfg.Dial(endpoint)
		return cc, func() {}, err
	}
	cc, err := c.conns.get(endpoint, func() (*grpc.ClientConn, error) {
		creds := insecure.NewCredentials()
		if c.cfg.TLS != nil {
			creds = credentials.NewTLS(c.cfg.TLS)
		}
		opts := append([]grpc.DialOption{
			grpc.WithTransportCredentials(creds),
			grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
			grpc.WithConnectParams(connectParams),
			// Static flow-control windows, larger than a Reset chunk:
			// with gRPC's default dynamic windows the client answers
			// each message that follows a quiet spell with a
			// bandwidth-probing PING, which costs both ends as much as
			// the message itself.
			grpc.WithInitialWindowSize(2 << 20),
			grpc.WithInitialConnWindowSize(4 << 20),
		}, c.cfg.DialOptions...)
		return grpc.NewClient(endpoint, opts...)
	})
	if err != nil {
		return nil, nil, err
	}
	return cc, func() {}, nil
}

// session runs one stream on endpoint until it fails. progressed reports
// whether it delivered a token; refused that the node refused the token
// the client resumed from (the next stream starts afresh).
func (c *Client) session(ctx context.Context, endpoint string, fresh bool) (progressed, refused bool, err error) {
	cc, release, err := c.connect(endpoint)
	if err != nil {
		return false, false, err
	}
	defer release()
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// A stream that hears nothing for a few bookmark intervals is dead
	// (a frozen node never closes it): it ends, and the client moves on.
	c.setInterval(defaultBookmarkInterval)
	silence := time.AfterFunc(silentIntervals*defaultBookmarkInterval, func() { cancel(errSilent) })
	defer silence.Stop()
	stream, err := c.open(sctx, cc, endpoint)
	if err != nil {
		return false, false, err
	}
	defer stream.close()
	token := ""
	if !fresh {
		token = c.view.Load().Token()
	}
	start := &confettipb.Start{
		Tenant:   c.cfg.Tenant,
		Prefixes: c.cfg.Prefixes,
		Items:    c.cfg.Items,
		Services: c.cfg.Services,
		Identity: &confettipb.Identity{InstanceId: c.cfg.Identity.InstanceID, Labels: c.cfg.Identity.Labels},
		Token:    token,
	}
	if c.cfg.Observer != nil {
		c.cfg.Observer.Subscribed(token)
	}
	if err := stream.Send(&confettipb.SubscribeRequest{Request: &confettipb.SubscribeRequest_Start{Start: start}}); err != nil {
		// The stream's own error says why Send failed.
		_, err = stream.recv(sctx)
		return false, false, err
	}
	c.mu.Lock()
	c.stats.Endpoint, c.stats.SubscribedAt = endpoint, time.Now()
	var answers []*confettipb.Ack
	if token != "" {
		// The node replays what came after the token, or nothing when
		// there is nothing new: the view is current.
		c.lostAt, c.heardAt = time.Time{}, time.Now()
		// The node knows which versions the token's view holds, not
		// what this client answered for them to another node: repeat it.
		for _, a := range c.answers {
			answers = append(answers, a)
		}
	}
	c.mu.Unlock()
	for _, a := range answers {
		if err := stream.Send(&confettipb.SubscribeRequest{Request: &confettipb.SubscribeRequest_Ack{Ack: a}}); err != nil {
			break
		}
	}
	var pending []*confettipb.KeyValue
	for first := true; ; first = false {
		m, err := stream.recv(sctx)
		if err != nil {
			if cause := context.Cause(sctx); errors.Is(cause, errSilent) {
				err = fmt.Errorf("%w for %d bookmark intervals", cause, silentIntervals)
			}
			refused := !progressed && token != "" && status.Code(err) == codes.InvalidArgument
			return progressed, refused, err
		}
		if first {
			if md, err := stream.Header(); err == nil {
				c.setInterval(bookmarkInterval(md))
			}
		}
		silence.Reset(silentIntervals * c.interval())
		if c.cfg.Observer != nil {
			c.cfg.Observer.Received(m)
		}
		old := c.view.Load()
		var (
			a   applied
			src Source
		)
		switch r := m.Response.(type) {
		case *confettipb.SubscribeResponse_Reset_:
			pending = append(pending, r.Reset_.GetKvs()...)
			if !r.Reset_.GetLast() {
				continue
			}
			a, src = applyReset(old, pending, r.Reset_.GetToken(), c.cfg.Validate), SourceReset
			pending = nil
		case *confettipb.SubscribeResponse_Events:
			a, src = applyEvents(old, r.Events, c.cfg.Validate), SourceEvents
		case *confettipb.SubscribeResponse_Progress:
			a, src = applied{view: newView(r.Progress.GetToken(), old.kvs)}, SourceEvents
		default:
			continue
		}
		c.account(src, a, token != "" && !progressed)
		progressed = true
		c.publish(src, a)
		for _, ack := range a.acks {
			if err := stream.Send(&confettipb.SubscribeRequest{Request: &confettipb.SubscribeRequest_Ack{Ack: ack}}); err != nil {
				// Recv reports the stream's failure next.
				break
			}
		}
	}
}

// account counts an applied message in the stats and logs what the
// validator refused. resuming is set for the first token-bearing message
// of a stream that presented a token.
func (c *Client) account(src Source, a applied, resuming bool) {
	for key, err := range a.rejected {
		c.lg.Warn("value refused by the validator; keeping the previous one", zap.String("key", key), zap.Error(err))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lostAt, c.heardAt = time.Time{}, time.Now()
	switch {
	case src == SourceReset:
		c.stats.Resets++
	case resuming:
		c.stats.Resumes++
	}
	for _, ack := range a.acks {
		if ack.Ok {
			c.stats.Acks++
		} else {
			c.stats.Nacks++
		}
		if c.answers == nil {
			c.answers = map[string]*confettipb.Ack{}
		}
		c.answers[ack.Item] = ack
	}
	c.stats.Rejected += int64(len(a.rejected))
}

// subStream is one subscription's stream: a Subscribe stream of its own,
// or its part of a shared SubscribeMany stream.
type subStream interface {
	Send(*confettipb.SubscribeRequest) error
	recv(ctx context.Context) (*confettipb.SubscribeResponse, error)
	Header() (metadata.MD, error)
	close()
}

// open opens the client's subscription stream to endpoint over cc.
func (c *Client) open(ctx context.Context, cc grpc.ClientConnInterface, endpoint string) (subStream, error) {
	if c.cfg.Streams != nil {
		return c.cfg.Streams.open(cc, endpoint, c.cfg.APIKey, c.cfg.MaxMessageBytes)
	}
	if c.cfg.APIKey != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, apiKeyMetadata, c.cfg.APIKey)
	}
	st, err := confettipb.NewCacheClient(cc).Subscribe(ctx, grpc.MaxCallRecvMsgSize(c.cfg.MaxMessageBytes))
	if err != nil {
		return nil, err
	}
	return ownStream{st}, nil
}

// ownStream is a Subscribe stream of the client's own; it ends with the
// session's context.
type ownStream struct {
	confettipb.Cache_SubscribeClient
}

func (s ownStream) recv(context.Context) (*confettipb.SubscribeResponse, error) { return s.Recv() }

func (ownStream) close() {}
