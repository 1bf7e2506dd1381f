package etcdapi

import (
	"context"
	"errors"
	"io"
	"sync"

	etcdpb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/confetti-io/confetti/api/confettipb"
)

// Watch serves an etcd watch stream over one SubscribeMany stream of the
// cache: every watcher is a subscription of it, started after the
// watcher's revision, so events come from the cache's history in etcd's
// order, whole revisions at a time. A start revision older than that
// history gets etcd's compacted response.
func (s *Server) Watch(stream etcdpb.Watch_WatchServer) error {
	c, err := s.caller(stream.Context())
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	sub, err := s.cache.SubscribeMany(ctx, bigReply)
	if err != nil {
		return convertErr(err)
	}
	w := &watchStream{s: s, c: caller{tenant: c.tenant, ctx: ctx}, out: stream, sub: sub, watchers: map[int64]*watcher{}}
	failed := make(chan error, 2)
	go func() { failed <- w.fromCache() }()
	reqs := make(chan *etcdpb.WatchRequest)
	go func() {
		for {
			req, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				// A client that closes its side (the JSON gateway does
				// after the create) keeps receiving, as with etcd.
				return
			}
			if err != nil {
				failed <- err
				return
			}
			select {
			case reqs <- req:
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		select {
		case err := <-failed:
			if status.Code(err) == codes.Canceled {
				return nil
			}
			return convertErr(err)
		case req := <-reqs:
			if err := w.handle(req); err != nil {
				return err
			}
		}
	}
}

type watchStream struct {
	s   *Server
	c   caller
	out etcdpb.Watch_WatchServer
	sub confettipb.Cache_SubscribeManyClient

	sendMu sync.Mutex

	mu       sync.Mutex
	watchers map[int64]*watcher
	nextID   int64
	// pending is the revision a RequestProgress waits for every watcher
	// to reach, or zero.
	pending int64
}

// watcher is one etcd watcher: its range and options, and the revision
// up to which it has been sent everything.
type watcher struct {
	id        int64
	key, end  []byte
	noPut     bool
	noDelete  bool
	progress  bool
	delivered int64
	// prev, for a watch with prev_kv, is the range's state after the
	// last revision delivered.
	prev map[string]*confettipb.KeyValue
}

func (w *watchStream) send(resp *etcdpb.WatchResponse) error {
	w.sendMu.Lock()
	defer w.sendMu.Unlock()
	return w.out.Send(resp)
}

func (w *watchStream) handle(req *etcdpb.WatchRequest) error {
	switch r := req.RequestUnion.(type) {
	case *etcdpb.WatchRequest_CreateRequest:
		return w.create(r.CreateRequest)
	case *etcdpb.WatchRequest_CancelRequest:
		id := r.CancelRequest.WatchId
		w.mu.Lock()
		_, ok := w.watchers[id]
		delete(w.watchers, id)
		w.mu.Unlock()
		if !ok {
			return nil
		}
		if err := w.sub.Send(&confettipb.SubscribeRequest{SubscriptionId: id + 1, Request: &confettipb.SubscribeRequest_Cancel{Cancel: &confettipb.Cancel{}}}); err != nil {
			return err
		}
		return w.send(&etcdpb.WatchResponse{Header: w.s.header(0), WatchId: id, Canceled: true})
	case *etcdpb.WatchRequest_ProgressRequest:
		return w.progress()
	}
	return nil
}

// refuse answers a create that cannot be served, the way etcd does.
func (w *watchStream) refuse(reason string) error {
	return w.send(&etcdpb.WatchResponse{Header: w.s.header(0), WatchId: -1, Created: true, Canceled: true, CancelReason: reason})
}

func (w *watchStream) create(cr *etcdpb.WatchCreateRequest) error {
	kr, err := nativeRange(cr.Key, cr.RangeEnd)
	if err != nil {
		return w.refuse(status.Convert(err).Message())
	}
	// The revision the watch starts after, and with prev_kv the range's
	// state there, which the watcher keeps to tell each event's previous
	// value (the cache's history keeps none).
	resp, err := w.s.cache.Range(w.c.ctx, &confettipb.RangeRequest{Tenant: w.c.tenant, Key: kr.key, RangeEnd: kr.end, Prefix: kr.prefix, CountOnly: !cr.PrevKv}, bigReply)
	if err != nil {
		return w.refuse(status.Convert(err).Message())
	}
	rev := resp.GetHeader().GetRevision()
	after := rev
	if cr.StartRevision > 0 && cr.StartRevision-1 != rev {
		after = cr.StartRevision - 1
		if cr.PrevKv {
			// The state at an earlier revision is etcd's to tell.
			resp, err = w.s.kv.Range(w.c.ctx, &confettipb.RangeRequest{Tenant: w.c.tenant, Key: kr.key, RangeEnd: kr.end, Prefix: kr.prefix, Revision: max(after, 1)}, bigReply)
			if err != nil {
				return w.refuse(status.Convert(convertErr(err)).Message())
			}
		}
	}
	wt := &watcher{key: cr.Key, end: cr.RangeEnd, progress: cr.ProgressNotify, delivered: min(after, rev)}
	if cr.PrevKv {
		if resp.More {
			return w.refuse("etcdapi: prev_kv is supported on watches of at most the server's page of keys; watch a narrower range, or without prev_kv")
		}
		wt.prev = map[string]*confettipb.KeyValue{}
		for _, kv := range resp.Kvs {
			wt.prev[kv.Key] = kv
		}
	}
	for _, f := range cr.Filters {
		switch f {
		case etcdpb.WatchCreateRequest_NOPUT:
			wt.noPut = true
		case etcdpb.WatchCreateRequest_NODELETE:
			wt.noDelete = true
		}
	}
	w.mu.Lock()
	switch {
	case cr.WatchId < 0:
		w.mu.Unlock()
		return w.refuse("etcdapi: watch_id must not be negative")
	case cr.WatchId > 0:
		if _, taken := w.watchers[cr.WatchId]; taken {
			w.mu.Unlock()
			return w.refuse("etcdserver: mvcc: duplicate watch ID provided on the WatchStream")
		}
		wt.id = cr.WatchId
	default:
		for {
			if _, taken := w.watchers[w.nextID]; !taken {
				break
			}
			w.nextID++
		}
		wt.id = w.nextID
		w.nextID++
	}
	w.watchers[wt.id] = wt
	w.mu.Unlock()
	if err := w.send(&etcdpb.WatchResponse{Header: w.s.header(rev), WatchId: wt.id, Created: true}); err != nil {
		return err
	}
	return w.sub.Send(&confettipb.SubscribeRequest{SubscriptionId: wt.id + 1, Request: &confettipb.SubscribeRequest_Start{Start: &confettipb.Start{
		Tenant: w.c.tenant, Prefixes: []string{watchPrefix(cr.Key, cr.RangeEnd)}, AfterRevision: &after,
	}}})
}

// progress answers RequestProgress, as etcd does, with a response of no
// watch id at a revision every watcher of the stream has been sent
// everything up to: at once when they all stand at the tenant's current
// revision, else when the cache's bookmarks bring them there.
func (w *watchStream) progress() error {
	resp, err := w.s.cache.Range(w.c.ctx, &confettipb.RangeRequest{Tenant: w.c.tenant, RangeEnd: "\x00", CountOnly: true})
	if err != nil {
		return convertErr(err)
	}
	w.mu.Lock()
	w.pending = max(w.pending, resp.GetHeader().GetRevision())
	out := w.progressLocked()
	w.mu.Unlock()
	if out == nil {
		return nil
	}
	return w.send(out)
}

// progressLocked returns the progress response a pending RequestProgress
// is owed, once every watcher has reached it.
func (w *watchStream) progressLocked() *etcdpb.WatchResponse {
	if w.pending == 0 {
		return nil
	}
	rev := w.pending
	for _, wt := range w.watchers {
		rev = min(rev, wt.delivered)
	}
	if rev < w.pending {
		return nil
	}
	w.pending = 0
	return &etcdpb.WatchResponse{Header: w.s.header(rev), WatchId: -1}
}

// fromCache turns the cache's messages into watch responses until the
// cache's stream ends.
func (w *watchStream) fromCache() error {
	for {
		msg, err := w.sub.Recv()
		if err != nil {
			return err
		}
		for _, sid := range msg.SubscriptionIds {
			if err := w.deliver(sid-1, msg); err != nil {
				return err
			}
		}
	}
}

func (w *watchStream) deliver(id int64, msg *confettipb.SubscribeResponse) error {
	w.mu.Lock()
	wt := w.watchers[id]
	if wt == nil {
		w.mu.Unlock()
		return nil
	}
	var resp *etcdpb.WatchResponse
	switch m := msg.Response.(type) {
	case *confettipb.SubscribeResponse_Events:
		var events []*mvccpb.Event
		for _, t := range m.Events.Txns {
			events = wt.appendEvents(events, t)
			wt.delivered = max(wt.delivered, t.Revision)
		}
		if len(events) > 0 {
			resp = &etcdpb.WatchResponse{Header: w.s.header(wt.delivered), WatchId: id, Events: events}
		}
	case *confettipb.SubscribeResponse_Progress:
		wt.delivered = max(wt.delivered, m.Progress.Revision)
		if wt.progress {
			resp = &etcdpb.WatchResponse{Header: w.s.header(wt.delivered), WatchId: id}
		}
	case *confettipb.SubscribeResponse_Closed:
		delete(w.watchers, id)
		resp = &etcdpb.WatchResponse{Header: w.s.header(wt.delivered), WatchId: id, Canceled: true, CompactRevision: m.Closed.CompactRevision}
		if m.Closed.CompactRevision == 0 {
			resp.CancelReason = m.Closed.Message
		}
	}
	owed := w.progressLocked()
	w.mu.Unlock()
	for _, r := range []*etcdpb.WatchResponse{resp, owed} {
		if r != nil {
			if err := w.send(r); err != nil {
				return err
			}
		}
	}
	return nil
}

// appendEvents appends the events of t that the watcher's range and
// filters let through, in etcd's shape.
func (wt *watcher) appendEvents(out []*mvccpb.Event, t *confettipb.Txn) []*mvccpb.Event {
	for _, ev := range t.Events {
		kv := ev.GetKv()
		if kv.GetKind() != confettipb.KeyValue_KEY || !inRange(wt.key, wt.end, kv.GetKey()) {
			continue
		}
		e := &mvccpb.Event{Kv: etcdKV(kv)}
		if wt.prev != nil {
			e.PrevKv = etcdKV(wt.prev[kv.GetKey()])
			if ev.Type == confettipb.Event_DELETE {
				delete(wt.prev, kv.GetKey())
			} else {
				wt.prev[kv.GetKey()] = kv
			}
		}
		if ev.Type == confettipb.Event_DELETE {
			if wt.noDelete {
				continue
			}
			e.Type = mvccpb.DELETE
			e.Kv = &mvccpb.KeyValue{Key: []byte(kv.GetKey()), ModRevision: kv.GetModRevision()}
		} else if wt.noPut {
			continue
		}
		out = append(out, e)
	}
	return out
}
