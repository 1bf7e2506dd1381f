package watchcheck

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/keys"
	"github.com/confetti-io/confetti/internal/release"
)

// Reference is etcd's own view of one shard: a listing at start and every
// transaction after it, from a watch.
type Reference struct {
	start int64

	mu    sync.Mutex
	kvs   []*mvccpb.KeyValue
	txns  []refTxn
	rev   int64
	err   error
	moved chan struct{}

	// cli and wctx are the current watch's client and context, to
	// request progress on.
	cli  *clientv3.Client
	wctx context.Context

	cancel context.CancelFunc
	done   chan struct{}
}

type refTxn struct {
	rev    int64
	events []*mvccpb.Event
}

// StartReference lists the shard's tenant keys and watches them from the
// next revision until Stop.
func StartReference(ctx context.Context, cli *clientv3.Client) (*Reference, error) {
	resp, err := cli.Get(ctx, keys.Root, clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(context.Background())
	r := &Reference{start: resp.Header.Revision, kvs: resp.Kvs, rev: resp.Header.Revision, moved: make(chan struct{}), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		// A watch that ends with an error other than compaction (an etcd
		// restart that invalidated the auth token, a lost leader) is
		// opened again after the last revision seen: etcd's history
		// still holds it.
		for wctx.Err() == nil {
			r.mu.Lock()
			from := r.rev + 1
			r.mu.Unlock()
			if r.watch(wctx, cli, from) {
				return
			}
			select {
			case <-wctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return r, nil
}

// watch follows etcd from revision from until the watch ends; true when
// it must not be opened again (compacted, or stopped).
func (r *Reference) watch(ctx context.Context, cli *clientv3.Client, from int64) bool {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	r.mu.Lock()
	r.cli, r.wctx = cli, wctx
	r.mu.Unlock()
	for wr := range cli.Watch(wctx, keys.Root, clientv3.WithPrefix(), clientv3.WithRev(from), clientv3.WithProgressNotify()) {
		r.mu.Lock()
		if wr.CompactRevision != 0 && r.err == nil {
			r.err = fmt.Errorf("reference watch: compacted at %d: %w", wr.CompactRevision, wr.Err())
		}
		for _, ev := range wr.Events {
			if n := len(r.txns); n > 0 && r.txns[n-1].rev == ev.Kv.ModRevision {
				r.txns[n-1].events = append(r.txns[n-1].events, ev)
			} else {
				r.txns = append(r.txns, refTxn{rev: ev.Kv.ModRevision, events: []*mvccpb.Event{ev}})
			}
		}
		// A response's header may be ahead of its events while etcd
		// catches the watcher up; only a progress notification (no
		// events) says every event up to its header was sent.
		if n := len(wr.Events); n > 0 {
			r.rev = max(r.rev, wr.Events[n-1].Kv.ModRevision)
		} else if wr.IsProgressNotify() {
			r.rev = max(r.rev, wr.Header.Revision)
		}
		close(r.moved)
		r.moved = make(chan struct{})
		failed := r.err != nil
		r.mu.Unlock()
		if failed {
			return true
		}
		if wr.Err() != nil {
			return ctx.Err() != nil
		}
	}
	return ctx.Err() != nil
}

// Stop ends the reference's watch.
func (r *Reference) Stop() {
	r.cancel()
	<-r.done
}

// Events returns every event the reference has seen since it started, in
// etcd's order.
func (r *Reference) Events() []*mvccpb.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*mvccpb.Event
	for _, t := range r.txns {
		out = append(out, t.events...)
	}
	return out
}

// Revision is the latest revision the reference has seen.
func (r *Reference) Revision() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rev
}

// WaitRevision waits until the reference has seen every transaction up to
// rev.
func (r *Reference) WaitRevision(ctx context.Context, rev int64) error {
	for {
		r.mu.Lock()
		cur, ch, err, cli, wctx := r.rev, r.moved, r.err, r.cli, r.wctx
		r.mu.Unlock()
		if err != nil {
			return err
		}
		if cur >= rev {
			return nil
		}
		// Events move the reference only up to the last revision that
		// touched its keys: etcd's progress notification confirms the rest.
		if cli != nil {
			_ = cli.RequestProgress(wctx)
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("reference at revision %d, waiting for %d: %w", cur, rev, ctx.Err())
		}
	}
}

// State returns a tenant's keys under prefixes at rev, keyed as a
// subscriber with identity id sees them (relative to the tenant, config
// items resolved), with their values.
func (r *Reference) State(tenant string, prefixes []string, id *confettipb.Identity, rev int64) (map[string]string, error) {
	raw, err := r.cursor(tenant, prefixes).at(rev)
	if err != nil {
		return nil, err
	}
	return resolveItems(raw, prefixes, id), nil
}

// resolveItems turns a tenant's physical keys into what a subscriber with
// identity id holds: an item's versions and release record give way to
// one key, cfg/<item>/, holding the content of the version its release
// resolves to.
func resolveItems(raw map[string]string, prefixes []string, id *confettipb.Identity) map[string]string {
	out := make(map[string]string, len(raw))
	rels := map[string]string{}
	versions := map[string]map[int64]string{}
	for k, v := range raw {
		if !strings.HasPrefix(k, keys.SpaceCfg) {
			out[k] = v
			continue
		}
		switch item, kind, n, ok := keys.ParseCfg(k); {
		case !ok:
		case kind == keys.CfgRelease:
			rels[item] = v
		case kind == keys.CfgVersion:
			if versions[item] == nil {
				versions[item] = map[int64]string{}
			}
			versions[item][n] = v
		}
	}
	for item, value := range rels {
		key := keys.ItemKey(item)
		if !keys.Match(prefixes, key) {
			continue
		}
		var rel confettipb.Release
		if proto.Unmarshal([]byte(value), &rel) != nil {
			continue
		}
		v, _ := release.Resolve(&rel, id)
		body, ok := versions[item][v]
		if v == 0 || !ok {
			continue
		}
		var iv confettipb.ItemVersion
		if proto.Unmarshal([]byte(body), &iv) != nil {
			continue
		}
		out[key] = string(iv.Content)
	}
	return out
}

// itemChanges lists, as "PUT key=value" and "DELETE key" lines, the config
// items whose resolved value differs between two resolved states.
func itemChanges(before, after map[string]string) []string {
	var out []string
	for k, v := range after {
		if strings.HasPrefix(k, keys.SpaceCfg) {
			if w, ok := before[k]; !ok || w != v {
				out = append(out, "PUT "+k+"="+v)
			}
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok && strings.HasPrefix(k, keys.SpaceCfg) {
			out = append(out, "DELETE "+k)
		}
	}
	return out
}

// stateCursor rebuilds a tenant's state at increasing revisions, applying
// each transaction once.
type stateCursor struct {
	r        *Reference
	tenant   string
	prefixes []string
	state    map[string]string
	next     int   // index of the next transaction to apply
	rev      int64 // revision the state is at
}

func (r *Reference) cursor(tenant string, prefixes []string) *stateCursor {
	return &stateCursor{r: r, tenant: tenant, prefixes: prefixes}
}

func (c *stateCursor) at(rev int64) (map[string]string, error) {
	r := c.r
	r.mu.Lock()
	defer r.mu.Unlock()
	if rev < r.start {
		return nil, fmt.Errorf("revision %d is before the reference started at %d", rev, r.start)
	}
	tenant, prefixes := c.tenant, c.prefixes
	apply := func(put bool, kv *mvccpb.KeyValue) {
		state := c.state
		t, rel, ok := keys.Split(string(kv.Key))
		if !ok || t != tenant || !keys.Visible(rel) || !keys.Match(prefixes, rel) {
			return
		}
		if put {
			state[rel] = string(kv.Value)
		} else {
			delete(state, rel)
		}
	}
	if c.state == nil || rev < c.rev {
		c.state, c.next = map[string]string{}, 0
		for _, kv := range r.kvs {
			apply(true, kv)
		}
	}
	for ; c.next < len(r.txns) && r.txns[c.next].rev <= rev; c.next++ {
		for _, ev := range r.txns[c.next].events {
			apply(ev.Type == mvccpb.PUT, ev.Kv)
		}
	}
	c.rev = rev
	return maps.Clone(c.state), nil
}

// txn returns the part of the transaction at rev that a subscriber of
// tenant under prefixes sees of its plain keys, as "PUT key=value" and
// "DELETE key" lines, and whether it touched a config item's keys.
func (r *Reference) txn(tenant string, prefixes []string, rev int64) (lines []string, items bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	i, found := slices.BinarySearchFunc(r.txns, rev, func(t refTxn, rev int64) int { return int(t.rev - rev) })
	if !found {
		return nil, false
	}
	for _, ev := range r.txns[i].events {
		t, rel, ok := keys.Split(string(ev.Kv.Key))
		if !ok || t != tenant || !keys.Visible(rel) || !keys.Match(prefixes, rel) {
			continue
		}
		switch {
		case strings.HasPrefix(rel, keys.SpaceCfg):
			items = true
		case ev.Type == mvccpb.PUT:
			lines = append(lines, "PUT "+rel+"="+string(ev.Kv.Value))
		default:
			lines = append(lines, "DELETE "+rel)
		}
	}
	return lines, items
}

// revs returns the revisions of etcd's transactions after from and up to
// to, in order.
func (r *Reference) revs(from, to int64) []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	i, _ := slices.BinarySearchFunc(r.txns, from+1, func(t refTxn, rev int64) int { return int(t.rev - rev) })
	var out []int64
	for ; i < len(r.txns) && r.txns[i].rev <= to; i++ {
		out = append(out, r.txns[i].rev)
	}
	return out
}

// Stream is what one subscriber received, across its reconnects. Its
// methods are safe for concurrent use.
type Stream struct {
	tenant   string
	prefixes []string
	id       *confettipb.Identity

	mu        sync.Mutex
	items     []item
	lastToken string
}

type item struct {
	at          time.Time
	resubscribe bool
	token       string // for a resubscribe: the token it resumed from
	msg         *confettipb.SubscribeResponse
}

// NewStream records a subscriber that subscribed with start (its tenant,
// what it names and its identity, for which config items resolve). It
// panics on a start the cache would refuse.
func NewStream(start *confettipb.Start) *Stream {
	p, err := keys.Scope(start.GetPrefixes(), start.GetItems(), start.GetServices())
	if err != nil {
		panic(err)
	}
	return &Stream{tenant: start.GetTenant(), prefixes: p, id: start.GetIdentity()}
}

// Subscribed records a (re)subscription resuming from token ("" for none).
func (s *Stream) Subscribed(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.items = append(s.items, item{at: time.Now(), resubscribe: true, token: token})
}

// Received records one message.
func (s *Stream) Received(m *confettipb.SubscribeResponse) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.items = append(s.items, item{at: time.Now(), msg: m})
	if tok := messageToken(m); tok != "" {
		s.lastToken = tok
	}
}

// messageToken is the token a client holds after applying m: its last
// transaction's, a final Reset chunk's or a bookmark's; empty for a
// message that carries none.
func messageToken(m *confettipb.SubscribeResponse) string {
	if txns := m.GetEvents().GetTxns(); len(txns) > 0 {
		return txns[len(txns)-1].GetToken()
	}
	return m.GetProgress().GetToken() + m.GetReset_().GetToken()
}

// relative is the tenant-relative key of a key a subscriber received.
func relative(kv *confettipb.KeyValue) string {
	return keys.Relative(kv.GetKey(), keys.Kind(kv.GetKind()))
}

// TokenAt is a token a subscriber received and when.
type TokenAt struct {
	At    time.Time
	Token string
}

// Tokens returns every token the stream received, in order, across every
// connection: the gaps between them are what a subscriber waited for news.
func (s *Stream) Tokens() []TokenAt {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []TokenAt
	for _, it := range s.items {
		if it.msg != nil {
			if tok := messageToken(it.msg); tok != "" {
				out = append(out, TokenAt{it.at, tok})
			}
		}
	}
	return out
}

// LastToken is the token of the last message that carried one, to wait on
// cheaply before a Check.
func (s *Stream) LastToken() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastToken
}

// Options tunes Check.
type Options struct {
	// MaxTokenGap bounds the time between two token-bearing messages on
	// one connection (the bookmark guarantee); zero means 10 seconds plus
	// one second of slack.
	MaxTokenGap time.Duration
	// Merged accepts a transaction that holds more than etcd's transaction
	// at its revision: a cache that relisted after compaction sends the
	// net difference of several transactions as one, at the relist's
	// revision, which may also be a real transaction's.
	Merged bool
}

// Result summarizes a checked stream.
type Result struct {
	// Resets counts completed Resets; Resumes counts resubscriptions that
	// replayed from their token instead.
	Resets, Resumes int
	// Events counts events applied.
	Events int
	// State is what the subscriber holds after the last message, keyed by
	// the tenant-relative layout (kv/<key>, cfg/<item>/,
	// svc/<service>/<instance>), and Revision the revision of its last
	// token.
	State    map[string]string
	Revision int64
}

// Check replays the stream the way a client must (Reset chunks applied at
// the last chunk, Events in order) and checks the contract against ref.
// revision reads the revision out of a token. It returns every violation
// found.
func Check(ref *Reference, s *Stream, revision func(token string) (int64, error), opt Options) (Result, error) {
	if opt.MaxTokenGap == 0 {
		opt.MaxTokenGap = 11 * time.Second
	}
	s.mu.Lock()
	items := slices.Clone(s.items)
	s.mu.Unlock()

	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	res := Result{State: map[string]string{}}
	var (
		pending     map[string]string
		lastRev     int64 = -1 // revision of the state held
		lastTxn     int64
		seen        = map[string]bool{}
		lastTokenAt time.Time
		resumeFrom  int64 = -1 // token revision of the current connection's start
		firstOfConn bool
	)
	tokenRev := func(tok string) int64 {
		rev, err := revision(tok)
		if err != nil {
			fail("unreadable token %q: %v", tok, err)
		}
		return rev
	}
	cur := ref.cursor(s.tenant, s.prefixes)
	reliable := func(rev int64) {
		if err := ref.WaitRevision(context.Background(), rev); err != nil {
			fail("reliable: %v", err)
			return
		}
		raw, err := cur.at(rev)
		if err != nil {
			fail("reliable: %v", err)
			return
		}
		if want := resolveItems(raw, s.prefixes, s.id); !maps.Equal(want, res.State) {
			fail("reliable: at revision %d the subscriber holds %v, etcd held %v", rev, res.State, want)
		}
	}
	txnCur, gapCur := ref.cursor(s.tenant, s.prefixes), ref.cursor(s.tenant, s.prefixes)
	// expected is what the subscriber must receive of etcd's transaction
	// at rev: its plain keys and services as they changed, and the items
	// whose resolved content changed; nothing if it changed nothing the
	// subscriber sees.
	expected := func(cur *stateCursor, rev int64) []string {
		want, items := ref.txn(s.tenant, s.prefixes, rev)
		if items {
			before, err1 := cur.at(rev - 1)
			after, err2 := cur.at(rev)
			if err := errors.Join(err1, err2); err != nil {
				fail("atomic: %v", err)
			}
			want = append(want, itemChanges(resolveItems(before, s.prefixes, s.id), resolveItems(after, s.prefixes, s.id))...)
		}
		return want
	}
	// missed fails for every transaction of etcd after the last one the
	// subscriber was given (or told it was past, by a bookmark) and up to
	// to that it should have seen: a lost event shows here even when a
	// later write of the same key hides it from the state. A relist's
	// merged difference (Merged) is exempt.
	missed := func(to int64, next string) {
		if opt.Merged || lastRev < 0 {
			return
		}
		for _, rev := range ref.revs(lastTxn, to) {
			if want := expected(gapCur, rev); len(want) > 0 {
				fail("reliable: etcd's transaction at revision %d (%q) was never delivered; %s", rev, want, next)
			}
		}
	}
	for i, it := range items {
		if it.resubscribe {
			firstOfConn, lastTokenAt = true, time.Time{}
			resumeFrom = -1
			if it.token != "" {
				resumeFrom = tokenRev(it.token)
				if resumeFrom != lastRev && lastRev >= 0 {
					fail("resumable: resubscribed from revision %d while holding %d", resumeFrom, lastRev)
				}
			}
			pending = nil
			continue
		}
		m := it.msg
		var tok string
		switch r := m.Response.(type) {
		case *confettipb.SubscribeResponse_Reset_:
			if pending == nil {
				pending = map[string]string{}
			}
			for _, kv := range r.Reset_.Kvs {
				pending[relative(kv)] = string(kv.Value)
			}
			if !r.Reset_.Last {
				continue
			}
			res.State, pending = pending, nil
			res.Resets++
			tok = r.Reset_.Token
			rev := tokenRev(tok)
			if rev < lastRev {
				fail("ordered: message %d resets to revision %d after %d", i, rev, lastRev)
			}
			lastRev, lastTxn = rev, rev
			reliable(rev)
		case *confettipb.SubscribeResponse_Events:
			if firstOfConn && resumeFrom >= 0 {
				res.Resumes++
			}
			for _, t := range r.Events.Txns {
				if t.Revision <= lastTxn {
					fail("ordered: txn at revision %d after %d", t.Revision, lastTxn)
				}
				lastTxn = t.Revision
				var got []string
				for _, ev := range t.Events {
					key := relative(ev.Kv)
					if ev.Type == confettipb.Event_PUT {
						id := fmt.Sprintf("%s@%d", key, ev.Kv.ModRevision)
						if seen[id] {
							fail("unique: %s delivered twice", id)
						}
						seen[id] = true
						res.State[key] = string(ev.Kv.Value)
						got = append(got, "PUT "+key+"="+string(ev.Kv.Value))
					} else {
						delete(res.State, key)
						got = append(got, "DELETE "+key)
					}
					res.Events++
				}
				if err := ref.WaitRevision(context.Background(), t.Revision); err != nil {
					fail("atomic: %v", err)
					continue
				}
				missed(t.Revision-1, fmt.Sprintf("the next delivered is at %d", t.Revision))
				want := expected(txnCur, t.Revision)
				slices.Sort(got)
				slices.Sort(want)
				if !slices.Equal(got, want) && !(opt.Merged && contains(got, want)) {
					fail("atomic: txn %d delivered %q, etcd's transaction was %q", t.Revision, got, want)
				}
				// Every transaction's token resumes exactly after it: the
				// state held then is etcd's at the token's revision.
				tok = t.Token
				if tok == "" {
					fail("resumable: txn %d carries no token", t.Revision)
					continue
				}
				if rev := tokenRev(tok); rev != t.Revision {
					fail("resumable: the token of txn %d is at revision %d", t.Revision, rev)
				}
				lastRev = t.Revision
				reliable(t.Revision)
			}
		case *confettipb.SubscribeResponse_Progress:
			if firstOfConn && resumeFrom >= 0 {
				res.Resumes++
			}
			tok = r.Progress.Token
			rev := tokenRev(tok)
			if rev < lastRev {
				fail("ordered: bookmark at %d after %d", rev, lastRev)
			}
			if err := ref.WaitRevision(context.Background(), rev); err == nil {
				missed(rev, fmt.Sprintf("a bookmark at %d said the subscriber was past it", rev))
			}
			lastRev, lastTxn = rev, max(lastTxn, rev)
			reliable(rev)
		}
		if !lastTokenAt.IsZero() && it.at.Sub(lastTokenAt) > opt.MaxTokenGap {
			fail("bookmarked: %v between tokens", it.at.Sub(lastTokenAt))
		}
		lastTokenAt = it.at
		firstOfConn = false
	}
	res.Revision = lastRev
	return res, errors.Join(errs...)
}

// contains reports whether every line of want is in got.
func contains(got, want []string) bool {
	for _, w := range want {
		if !slices.Contains(got, w) {
			return false
		}
	}
	return true
}
