package bench

import (
	"context"
	"strings"
	"sync"

	"github.com/confetti-io/confetti/api/confettipb"
)

// Floor is the transport limit the fan-out is compared with: the Cache
// service's Subscribe and SubscribeMany with no store behind them. Every
// subscription gets an empty Reset, then each value published to its
// tenant as one Events message; a SubscribeMany stream gets one message
// naming all its subscriptions of the tenant. Each stream sends from its
// own goroutine and bounded queue.
type Floor struct {
	confettipb.UnimplementedCacheServer

	mu sync.Mutex
	// subs holds, per tenant, each stream's views (its queue and the
	// prefixes subscribed to) and the ids of the view's subscriptions
	// (nil for a Subscribe stream): one message per view and stream.
	subs map[string]map[floorView][]int64
	rev  int64
}

// floorView is the subscriptions of one stream with the same prefixes.
type floorView struct {
	ch       chan *confettipb.SubscribeResponse
	prefixes string
}

// NewFloor returns a Floor with no subscribers.
func NewFloor() *Floor {
	return &Floor{subs: map[string]map[floorView][]int64{}}
}

// add records subscription id (zero on a Subscribe stream) of start on
// the stream of queue ch.
func (f *Floor) add(start *confettipb.Start, ch chan *confettipb.SubscribeResponse, id int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	tenant := start.GetTenant()
	if f.subs[tenant] == nil {
		f.subs[tenant] = map[floorView][]int64{}
	}
	v := floorView{ch: ch, prefixes: strings.Join(start.GetPrefixes(), "\x00")}
	ids := f.subs[tenant][v]
	if id != 0 {
		ids = append(ids, id)
	}
	f.subs[tenant][v] = ids
}

// remove forgets the stream of queue ch.
func (f *Floor) remove(ch chan *confettipb.SubscribeResponse) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, subs := range f.subs {
		for v := range subs {
			if v.ch == ch {
				delete(subs, v)
			}
		}
	}
}

// Subscribe serves one subscriber until it goes away.
func (f *Floor) Subscribe(stream confettipb.Cache_SubscribeServer) error {
	req, err := stream.Recv()
	if err != nil {
		return err
	}
	ch := make(chan *confettipb.SubscribeResponse, 128)
	defer f.remove(ch)
	if err := stream.Send(&confettipb.SubscribeResponse{Response: &confettipb.SubscribeResponse_Reset_{Reset_: &confettipb.Reset{Last: true, Token: "floor"}}}); err != nil {
		return err
	}
	f.add(req.GetStart(), ch, 0)
	return f.send(stream, ch)
}

// SubscribeMany serves the subscriptions of one stream until it goes
// away.
func (f *Floor) SubscribeMany(stream confettipb.Cache_SubscribeManyServer) error {
	ch := make(chan *confettipb.SubscribeResponse, 128)
	defer f.remove(ch)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				return
			}
			if start := req.GetStart(); start != nil {
				ch <- &confettipb.SubscribeResponse{SubscriptionIds: []int64{req.SubscriptionId}, Response: &confettipb.SubscribeResponse_Reset_{Reset_: &confettipb.Reset{Last: true, Token: "floor"}}}
				f.add(start, ch, req.SubscriptionId)
			}
		}
	}()
	return f.send(stream, ch)
}

// send sends what is queued to ch until the stream ends.
func (f *Floor) send(stream interface {
	Send(*confettipb.SubscribeResponse) error
	Context() context.Context
}, ch chan *confettipb.SubscribeResponse) error {
	for {
		select {
		case m := <-ch:
			if err := stream.Send(m); err != nil {
				return err
			}
		case <-stream.Context().Done():
			return nil
		}
	}
}

// Publish queues value, as the key tick, to every subscriber of
// tenant; a stream whose queue is full misses it.
func (f *Floor) Publish(tenant, value string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rev++
	ev := &confettipb.SubscribeResponse_Events{Events: &confettipb.Events{
		Txns: []*confettipb.Txn{{Revision: f.rev, Token: "floor", Events: []*confettipb.Event{{Type: confettipb.Event_PUT, Kv: &confettipb.KeyValue{Key: tickKey, Value: []byte(value), ModRevision: f.rev}}}}},
	}}
	for v, ids := range f.subs[tenant] {
		select {
		case v.ch <- &confettipb.SubscribeResponse{SubscriptionIds: ids, Response: ev}:
		default:
		}
	}
}
