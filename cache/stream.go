package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/rpcerr"
	"github.com/confetti-io/confetti/internal/wire"
)

// A sink is the sending side of one stream: Subscribe, SubscribeMany, or
// a Server-Sent Events connection. Groups queue frames to it without
// blocking (a full queue marks the frame's subscriptions lagging), the
// stream's subscriptions queue their own catch-up, waiting for room, and
// the frames are sent in order: by the stream's goroutine (run), or, on
// an SSE connection taken over from HTTP, by the node's writer pool.
type sink struct {
	stream grpc.ServerStream
	// many is set on a SubscribeMany stream: every message names its
	// subscriptions.
	many  bool
	limit int
	// out, when set, sends instead of stream (SSE over HTTP/2); sse, when
	// set, is the connection the writer pool sends to.
	out sender
	sse *sseConn

	mu    sync.Mutex
	q     []frame
	spare []frame
	// room, when a subscription waits for room in q, is closed when the
	// sender next takes frames.
	room chan struct{}
	wake chan struct{}
	// scheduled is set, on an SSE connection, while the sink waits for or
	// holds a writer of the pool.
	scheduled bool
}

// sender sends a batch of frames in order.
type sender interface {
	send(batch []frame) error
}

// frame is one message for one subscription (sub) or several (subs).
type frame struct {
	msg  *outMsg
	sub  *subscription
	subs []*subscription
}

func newSink(stream grpc.ServerStream, many bool, limit int) *sink {
	return &sink{stream: stream, many: many, limit: limit, wake: make(chan struct{}, 1)}
}

// offer queues f unless the queue is full.
func (k *sink) offer(f frame) bool {
	k.mu.Lock()
	if len(k.q) >= k.limit {
		k.mu.Unlock()
		return false
	}
	k.q = append(k.q, f)
	if k.sse != nil {
		schedule := !k.scheduled
		k.scheduled = true
		k.mu.Unlock()
		if schedule {
			k.sse.pool.schedule(k)
		}
		return true
	}
	k.mu.Unlock()
	select {
	case k.wake <- struct{}{}:
	default:
	}
	return true
}

// take removes the queued frames for sending, making room for waiting
// subscriptions. The batch's slice belongs to the caller until it hands
// it back by sent or release.
func (k *sink) take() []frame {
	k.mu.Lock()
	defer k.mu.Unlock()
	batch := k.q
	k.q, k.spare = k.spare[:0], nil
	if k.room != nil {
		close(k.room)
		k.room = nil
	}
	return batch
}

// sent accounts for a sent batch and keeps its slice for the next.
func (k *sink) sent(batch []frame, c *Cache) {
	for _, f := range batch {
		n := 1
		if f.sub != nil {
			f.sub.delivered(f.msg)
		} else {
			n = len(f.subs)
			for _, s := range f.subs {
				s.delivered(f.msg)
			}
		}
		c.metrics.messagesOut.Inc()
		c.metrics.eventsOut.Add(float64(n * f.msg.events))
		c.metrics.bytesOut.Add(float64(n * len(f.msg.body)))
	}
	clear(batch)
	k.mu.Lock()
	k.spare = batch[:0]
	k.mu.Unlock()
}

// release ends a pool writer's hold on the sink if nothing is queued,
// keeping the empty batch's slice for the next; it reports whether the
// sink was released.
func (k *sink) release(batch []frame) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.spare == nil {
		k.spare = batch[:0]
	}
	if len(k.q) > 0 {
		return false
	}
	k.scheduled = false
	return true
}

// put queues f, waiting for room.
func (k *sink) put(ctx context.Context, f frame) error {
	for !k.offer(f) {
		k.mu.Lock()
		if len(k.q) < k.limit {
			k.mu.Unlock()
			continue
		}
		if k.room == nil {
			k.room = make(chan struct{})
		}
		room := k.room
		k.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// run sends queued frames until ctx ends or a send fails.
func (k *sink) run(ctx context.Context, c *Cache) error {
	out := k.out
	if out == nil {
		out = k
	}
	for {
		select {
		case <-k.wake:
		case <-ctx.Done():
			return nil
		}
		batch := k.take()
		if err := out.send(batch); err != nil {
			return err
		}
		k.sent(batch, c)
	}
}

// send sends frames on the gRPC stream.
func (k *sink) send(batch []frame) error {
	for _, f := range batch {
		if err := k.sendFrame(f); err != nil {
			return err
		}
	}
	return nil
}

// sendFrame sends one frame: the encoded message, and on a SubscribeMany
// stream the ids of its subscriptions. Two encoded messages of one type
// concatenated are one message with the fields of both, so the body is
// carried as is, behind the ids.
func (k *sink) sendFrame(f frame) error {
	resp := &confettipb.SubscribeResponse{}
	if k.many {
		if f.sub != nil {
			resp.SubscriptionIds = []int64{f.sub.sid}
		} else {
			resp.SubscriptionIds = make([]int64, len(f.subs))
			for i, s := range f.subs {
				resp.SubscriptionIds[i] = s.sid
			}
		}
	}
	resp.ProtoReflect().SetUnknown(f.msg.body)
	return k.stream.SendMsg(resp)
}

// enter counts an open stream and returns its context, also ended when
// the node closes; the returned func ends both.
func (c *Cache) enter(stream grpc.ServerStream) (context.Context, func(), error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, nil, ErrClosed
	}
	c.subsWG.Add(1)
	// Sent with the first message: how often the client hears from us.
	stream.SetHeader(metadata.Pairs(wire.BookmarkIntervalHeader, c.cfg.ProgressInterval.String()))
	ctx, cancel := context.WithCancel(stream.Context())
	stop := context.AfterFunc(c.ctx, cancel)
	return ctx, func() {
		stop()
		cancel()
		c.subsWG.Done()
	}, nil
}

// peerAddr names a stream's client connection.
func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return "unknown"
}

// endStatus is the gRPC status a subscription that ended with err reports;
// nil for the client going away.
func endStatus(err error) error {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, io.EOF) {
		return nil
	}
	return rpcerr.Status(err)
}

// Subscribe serves one subscription: a Reset or a replay from the token,
// then Events and Progress until the client goes away.
func (c *Cache) Subscribe(stream confettipb.Cache_SubscribeServer) error {
	ctx, end, err := c.enter(stream)
	if err != nil {
		return rpcerr.Status(err)
	}
	defer end()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	req, err := stream.Recv()
	if err != nil {
		return endStatus(err)
	}
	start := req.GetStart()
	if start == nil {
		return rpcerr.Status(fmt.Errorf("%w: the first message of a subscription must be start", ErrBadRequest))
	}
	k := newSink(stream, false, c.cfg.SubscriberQueue)
	sub, pos, release, err := c.start(ctx, k, 0, start, peerAddr(ctx))
	if err != nil {
		return endStatus(err)
	}
	defer release()
	// Acks are read as they come, so that flow control never blocks the
	// client; a client that half-closes keeps receiving.
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				if !errors.Is(err, io.EOF) {
					cancel()
				}
				return
			}
			if a := req.GetAck(); a != nil {
				sub.rollout.ack(a, time.Now())
			}
		}
	}()
	sctx, scancel := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() {
		served <- sub.serve(sctx, pos)
		scancel()
	}()
	sendErr := k.run(sctx, c)
	scancel()
	if err := <-served; err != nil && sendErr == nil {
		sendErr = err
	}
	return endStatus(sendErr)
}

// start opens a subscription on stream k and counts it against the
// limits; release ends it.
func (c *Cache) start(ctx context.Context, k *sink, sid int64, start *confettipb.Start, conn string) (*subscription, *position, func(), error) {
	sub, pos, err := c.open(ctx, k, sid, start)
	if err != nil {
		return nil, nil, nil, err
	}
	release, err := c.admit(sub, conn)
	if err != nil {
		return nil, nil, nil, err
	}
	c.metrics.subscribers.Inc()
	return sub, pos, func() {
		c.metrics.subscribers.Dec()
		release()
	}, nil
}

// SubscribeMany serves the subscriptions a client opens over one stream.
// Each runs as a Subscribe would; the group messages of subscriptions
// sharing a view go out once, naming all of them.
func (c *Cache) SubscribeMany(stream confettipb.Cache_SubscribeManyServer) error {
	ctx, end, err := c.enter(stream)
	if err != nil {
		return rpcerr.Status(err)
	}
	defer end()
	ctx, cancel := context.WithCancel(ctx)

	m := &mux{c: c, ctx: ctx, sink: newSink(stream, true, c.cfg.SubscriberQueue), conn: peerAddr(ctx), subs: map[int64]*muxSub{}}
	defer m.wg.Wait()
	defer cancel()
	refused := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if err == nil {
				err = m.handle(req)
				if err == nil {
					continue
				}
				refused <- err
			}
			if !errors.Is(err, io.EOF) {
				cancel()
			}
			return
		}
	}()
	err = m.sink.run(ctx, c)
	select {
	case err = <-refused:
	default:
	}
	return endStatus(err)
}

// mux is one SubscribeMany stream's subscriptions.
type mux struct {
	c    *Cache
	ctx  context.Context
	sink *sink
	conn string
	wg   sync.WaitGroup

	mu   sync.Mutex
	subs map[int64]*muxSub
}

// muxSub is one subscription of a SubscribeMany stream.
type muxSub struct {
	cancel context.CancelFunc
	// sub is set once the subscription is open; guarded by mux.mu.
	sub *subscription
}

// handle acts on one request of the stream. A request that breaks the
// protocol (no id, an id already open, no request) ends the stream: the
// client could not tell which subscription an answer was for.
func (m *mux) handle(req *confettipb.SubscribeRequest) error {
	id := req.GetSubscriptionId()
	if id == 0 {
		return fmt.Errorf("%w: every SubscribeMany request needs a subscription_id other than zero", ErrBadRequest)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	ms := m.subs[id]
	switch r := req.GetRequest().(type) {
	case *confettipb.SubscribeRequest_Start:
		if ms != nil {
			return fmt.Errorf("%w: subscription %d is already open on this stream; cancel it and wait for its Closed, or choose another id", ErrBadRequest, id)
		}
		ctx, cancel := context.WithCancel(m.ctx)
		ms = &muxSub{cancel: cancel}
		m.subs[id] = ms
		m.wg.Add(1)
		go m.serve(ctx, id, ms, r.Start)
	case *confettipb.SubscribeRequest_Ack:
		if ms != nil && ms.sub != nil {
			ms.sub.rollout.ack(r.Ack, time.Now())
		}
	case *confettipb.SubscribeRequest_Cancel:
		if ms != nil {
			ms.cancel()
		}
	default:
		return fmt.Errorf("%w: a SubscribeMany request must be start, ack or cancel", ErrBadRequest)
	}
	return nil
}

// serve runs one subscription until it is canceled or fails, then tells
// the client with Closed. The id is free again once Closed is queued, so
// nothing of a new subscription of the same id can come before it.
func (m *mux) serve(ctx context.Context, id int64, ms *muxSub, start *confettipb.Start) {
	defer m.wg.Done()
	defer ms.cancel()
	err := m.run(ctx, id, ms, start)
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.subs, id)
	if m.ctx.Err() == nil {
		m.close(id, err)
	}
}

func (m *mux) run(ctx context.Context, id int64, ms *muxSub, start *confettipb.Start) error {
	sub, pos, release, err := m.c.start(ctx, m.sink, id, start, m.conn)
	if err != nil {
		return err
	}
	defer release()
	m.mu.Lock()
	ms.sub = sub
	m.mu.Unlock()
	return sub.serve(ctx, pos)
}

// close sends Closed for subscription id: OK when err is nil.
func (m *mux) close(id int64, err error) {
	st := status.New(codes.OK, "")
	if err != nil {
		st = status.Convert(rpcerr.Status(err))
	}
	closed := &confettipb.Closed{Code: int32(st.Code()), Message: st.Message()}
	if ce := (*CompactedError)(nil); errors.As(err, &ce) {
		closed.CompactRevision = ce.Revision
	}
	b, merr := proto.Marshal(&confettipb.SubscribeResponse{Response: &confettipb.SubscribeResponse_Closed{Closed: closed}})
	if merr != nil {
		return
	}
	_ = m.sink.put(m.ctx, frame{msg: &outMsg{body: b}, sub: &subscription{sid: id}})
}
