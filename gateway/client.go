package gateway

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/keys"
)

// Client is one subscription kept current across cache node failures,
// with its view held in memory and, optionally, on disk. Its methods are
// safe for concurrent use; View and Get take no lock.
type Client struct {
	cfg Config
	lg  *zap.Logger
	// scope is what the client subscribes to, normalized as the cache
	// does; a snapshot file is bound to it.
	scope    []string
	snapPath string

	view      atomic.Pointer[View]
	ready     chan struct{}
	readyOnce sync.Once
	changes   chan Change

	// kick wakes the snapshot writer; it holds at most one wake-up.
	kick chan struct{}
	// lastWritten is the view the snapshot file holds; only the snapshot
	// writer (and Close, after it stopped) touch it.
	lastWritten *View

	mu       sync.Mutex
	handlers []func(Change)
	stats    Stats
	// lostAt is when the view stopped being known current: Start, or the
	// end of the last stream; zero while a stream keeps it current.
	lostAt time.Time
	// heardAt is when the current stream last delivered a message, and
	// bookmarks the node's bookmark interval: a stream that hears nothing
	// beyond an interval is late, and its lag grows.
	heardAt   time.Time
	bookmarks time.Duration
	state     int // 0 new, 1 started, 2 closed
	// answers is the last ACK or NACK sent per item, repeated to the node
	// a stream resumes on.
	answers map[string]*confettipb.Ack

	// conns are the client's own connections to the cache nodes.
	conns *conns
	// jitter draws a reconnect's wait within a window (full jitter).
	jitter func(time.Duration) time.Duration

	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// Stats describes a client's connection and view.
type Stats struct {
	// Endpoint is the cache node the client streams from; empty while it
	// is disconnected.
	Endpoint string
	// SubscribedAt is when the current (or last) stream was opened.
	SubscribedAt time.Time
	// Token is the view's resume token.
	Token string
	// Keys is the number of keys in the view.
	Keys int
	// Lag is how long the view may have been stale: zero while a stream
	// keeps it current (the cache pushes every change as it happens and
	// sends a bookmark at least every bookmark interval), the time since
	// the last message beyond one bookmark interval while a stream is
	// silent (a frozen node: the stream is dropped after 3 intervals),
	// else the time since the last stream ended, or since Start before
	// the first sync. A stream is current once it resumed from the view's
	// token or delivered its first Reset or Events.
	Lag time.Duration
	// Resets counts Resets applied; Resumes counts streams that resumed
	// from the view's token by replay instead.
	Resets, Resumes int64
	// Reconnects counts attempts to open a stream after the first.
	Reconnects int64
	// LastError is the last stream or snapshot error, with its time.
	LastError   string
	LastErrorAt time.Time
	// SnapshotLoaded reports that the view was loaded from the snapshot
	// file at Start; SnapshotError why a snapshot file was not used (a
	// corrupt file is also logged and moved aside to <file>.corrupt).
	SnapshotLoaded bool
	SnapshotError  string
	// SnapshotWrites counts snapshot files written; SnapshotAt is when
	// the last one was.
	SnapshotWrites int64
	SnapshotAt     time.Time
	// Acks and Nacks count item versions acknowledged and refused;
	// Rejected counts every PUT Validate refused (items and plain keys).
	Acks, Nacks, Rejected int64
	// DroppedChanges counts Changes removed unread from a full Changes
	// channel.
	DroppedChanges int64
}

// New returns a client for cfg; Start starts it.
func New(cfg Config) (*Client, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	scope, err := keys.Scope(cfg.Prefixes, cfg.Items, cfg.Services)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadConfig, err)
	}
	c := &Client{
		cfg:     cfg,
		lg:      cfg.Logger.With(zap.String("tenant", cfg.Tenant)),
		scope:   scope,
		ready:   make(chan struct{}),
		changes: make(chan Change, cfg.ChangeBuffer),
		kick:    make(chan struct{}, 1),
		jitter:  jitter,
	}
	c.cfg.Endpoints = append([]string(nil), cfg.Endpoints...)
	c.conns = newConns()
	if cfg.Streams != nil {
		c.conns = cfg.Streams.conns
	}
	if cfg.SnapshotDir != "" {
		c.snapPath = snapshotPath(cfg.SnapshotDir, cfg.Tenant, c.scope)
	}
	c.view.Store(emptyView)
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c, nil
}

// Start loads the snapshot file, if any, and serves it at once (Ready is
// closed), then subscribes in the background, resuming from the
// snapshot's token. The client runs until Close; ctx bounds Start only. A
// missing, corrupt or foreign snapshot is not an error: the client starts
// empty, reports why in Stats and the log, and syncs.
func (c *Client) Start(ctx context.Context) error {
	c.mu.Lock()
	switch c.state {
	case 1:
		c.mu.Unlock()
		return ErrStarted
	case 2:
		c.mu.Unlock()
		return ErrClosed
	}
	c.state = 1
	c.lostAt = time.Now()
	c.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	if c.snapPath != "" {
		if err := os.MkdirAll(c.cfg.SnapshotDir, 0o700); err != nil {
			return err
		}
		removeStaleTemps(c.snapPath)
		c.loadSnapshot()
		c.wg.Add(1)
		go c.snapshotLoop()
	}
	c.wg.Add(1)
	go c.run()
	return nil
}

func (c *Client) loadSnapshot() {
	v, err := readSnapshot(c.snapPath, c.cfg.Tenant, c.scope)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return
	case err != nil:
		c.lg.Error("snapshot not used; starting empty", zap.String("file", c.snapPath), zap.Error(err))
		c.mu.Lock()
		c.stats.SnapshotError = err.Error()
		c.mu.Unlock()
		c.noteError(err)
		return
	}
	c.lg.Info("serving the snapshot", zap.String("file", c.snapPath), zap.Int("keys", v.Len()))
	c.mu.Lock()
	c.stats.SnapshotLoaded = true
	c.mu.Unlock()
	c.lastWritten = v
	c.publish(SourceSnapshot, applied{view: v, updates: diff(nil, v.kvs)})
}

// Close stops the client: it ends the stream, writes the last view to the
// snapshot file, and closes the Changes channel. The view stays readable.
func (c *Client) Close() error {
	var err error
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.state = 2
		c.mu.Unlock()
		c.cancel()
		c.wg.Wait()
		if c.cfg.Streams == nil {
			c.conns.close()
		}
		if c.snapPath != "" {
			err = c.writeSnapshot()
		}
		close(c.changes)
	})
	return err
}

// View returns the current view. It never returns nil and takes no lock.
func (c *Client) View() *View { return c.view.Load() }

// Get returns a plain key of the current view; see View.Get.
func (c *Client) Get(key string) (*confettipb.KeyValue, bool) { return c.view.Load().Get(key) }

// Item returns a config item of the current view; see View.Item.
func (c *Client) Item(name string) (*confettipb.KeyValue, bool) { return c.view.Load().Item(name) }

// Ready is closed once the client serves a view: the snapshot loaded at
// Start or the first sync with a cache node, after the OnChange handlers
// saw it.
func (c *Client) Ready() <-chan struct{} { return c.ready }

// OnChange registers fn to be called with every Change, in order, on the
// goroutine that applies messages, after the new view is published. fn
// must be quick: while it runs the client applies nothing else (readers
// are not delayed). Register before Start to see the snapshot load.
func (c *Client) OnChange(fn func(Change)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.handlers = append(c.handlers, fn)
}

// Changes returns a channel that receives every Change, in order. It
// holds Config.ChangeBuffer changes; when it is full the oldest unread
// change is dropped (counted in Stats.DroppedChanges) so that the newest
// is always delivered: a consumer that falls behind misses steps, never
// the latest view (each Change carries it). It is closed by Close.
func (c *Client) Changes() <-chan Change { return c.changes }

// Stats returns the client's connection and view figures.
func (c *Client) Stats() Stats {
	v := c.view.Load()
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.Token, s.Keys = v.Token(), v.Len()
	switch {
	case !c.lostAt.IsZero():
		s.Lag = time.Since(c.lostAt)
	case !c.heardAt.IsZero():
		s.Lag = max(0, time.Since(c.heardAt)-c.bookmarks)
	}
	return s
}

// setInterval records the current stream's bookmark interval.
func (c *Client) setInterval(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.bookmarks = d
}

// interval is the current stream's bookmark interval.
func (c *Client) interval() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bookmarks
}

// publish makes a the current view and tells the change handlers, the
// Changes channel and the snapshot writer; Ready closes after the handlers
// saw the first view.
func (c *Client) publish(src Source, a applied) {
	prev := c.view.Swap(a.view)
	defer c.readyOnce.Do(func() { close(c.ready) })
	if src != SourceSnapshot {
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
	if len(a.updates) == 0 {
		return
	}
	ch := Change{Source: src, Prev: prev, View: a.view, Updates: a.updates}
	c.mu.Lock()
	handlers := c.handlers
	c.mu.Unlock()
	for _, h := range handlers {
		h(ch)
	}
	for {
		select {
		case c.changes <- ch:
			return
		default:
		}
		select {
		case <-c.changes:
			c.mu.Lock()
			c.stats.DroppedChanges++
			c.mu.Unlock()
		default:
		}
	}
}

func (c *Client) noteError(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stats.LastError, c.stats.LastErrorAt = err.Error(), time.Now()
}

// snapshotLoop writes the view to the snapshot file after changes, at
// most once per SnapshotInterval: changes in between coalesce.
func (c *Client) snapshotLoop() {
	defer c.wg.Done()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.kick:
		}
		if err := c.writeSnapshot(); err != nil {
			c.lg.Warn("snapshot write failed; the view is still served from memory", zap.String("file", c.snapPath), zap.Error(err))
			c.noteError(err)
		}
		t := time.NewTimer(c.cfg.SnapshotInterval)
		select {
		case <-c.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// writeSnapshot writes the current view unless the file holds it already
// or it holds nothing worth keeping.
func (c *Client) writeSnapshot() error {
	v := c.view.Load()
	if v == c.lastWritten || v.Token() == "" {
		return nil
	}
	data, err := encodeSnapshot(c.cfg.Tenant, c.scope, v)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(c.snapPath, data); err != nil {
		return err
	}
	c.lastWritten = v
	c.mu.Lock()
	c.stats.SnapshotWrites++
	c.stats.SnapshotAt = time.Now()
	c.mu.Unlock()
	return nil
}
