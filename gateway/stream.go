package gateway

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/confetti-io/confetti/api/confettipb"
)

// apiKeyMetadata is the gRPC metadata that carries the API key.
const apiKeyMetadata = "x-api-key"

// healthyStream is how long a stream must have lasted for its failure to
// count as the first of a new series (backoff from BackoffInitial again).
const healthyStream = 10 * time.Second

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

// run keeps a stream open until Close: on every failure it moves to the
// next endpoint and waits a jittered backoff first, so that a fleet that
// lost the same node does not come back all at once.
func (c *Client) run() {
	defer c.wg.Done()
	eps := c.cfg.Endpoints
	i := rand.IntN(len(eps))
	attempts := 0
	fresh := false
	for n := 0; ; n++ {
		if n > 0 {
			t := time.NewTimer(jitter(backoffWindow(c.cfg.BackoffInitial, c.cfg.BackoffMax, attempts)))
			select {
			case <-c.ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			c.mu.Lock()
			c.stats.Reconnects++
			c.mu.Unlock()
		}
		began := time.Now()
		progressed, refused, err := c.session(c.ctx, eps[i], fresh)
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

// connect returns a connection to endpoint and what to do with it when
// the stream ends.
func (c *Client) connect(endpoint string) (grpc.ClientConnInterface, func(), error) {
	if c.cfg.Dial != nil {
		cc, err := c.cfg.Dial(endpoint)
		return cc, func() {}, err
	}
	creds := insecure.NewCredentials()
	if c.cfg.TLS != nil {
		creds = credentials.NewTLS(c.cfg.TLS)
	}
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
		// Static flow-control windows, larger than a Reset chunk: with
		// gRPC's default dynamic windows the client answers each message
		// that follows a quiet spell with a bandwidth-probing PING, which
		// costs both ends as much as the message itself.
		grpc.WithInitialWindowSize(2 << 20),
		grpc.WithInitialConnWindowSize(4 << 20),
	}, c.cfg.DialOptions...)
	cc, err := grpc.NewClient(endpoint, opts...)
	if err != nil {
		return nil, nil, err
	}
	return cc, func() { cc.Close() }, nil
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
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if c.cfg.APIKey != "" {
		sctx = metadata.AppendToOutgoingContext(sctx, apiKeyMetadata, c.cfg.APIKey)
	}
	stream, err := confettipb.NewCacheClient(cc).Subscribe(sctx, grpc.MaxCallRecvMsgSize(c.cfg.MaxMessageBytes))
	if err != nil {
		return false, false, err
	}
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
	if c.onSubscribe != nil {
		c.onSubscribe(token)
	}
	if err := stream.Send(&confettipb.SubscribeRequest{Request: &confettipb.SubscribeRequest_Start{Start: start}}); err != nil {
		// The stream's own error says why Send failed.
		_, err = stream.Recv()
		return false, false, err
	}
	c.mu.Lock()
	c.stats.Endpoint, c.stats.SubscribedAt = endpoint, time.Now()
	var answers []*confettipb.Ack
	if token != "" {
		// The node replays what came after the token, or nothing when
		// there is nothing new: the view is current.
		c.lostAt = time.Time{}
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
	for {
		m, err := stream.Recv()
		if err != nil {
			refused := !progressed && token != "" && status.Code(err) == codes.InvalidArgument
			return progressed, refused, err
		}
		if c.onMessage != nil {
			c.onMessage(m)
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
	c.lostAt = time.Time{}
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
