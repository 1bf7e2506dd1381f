package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/apijson"
	"github.com/confetti-io/confetti/internal/keys"
)

// cliIdentity is the identity kv watch subscribes with. Resume tokens are
// bound to an identity, so it is the same for every invocation: a token
// printed by one watch resumes in the next.
var cliIdentity = &pb.Identity{InstanceId: "confetti-cli"}

func newKVCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "kv",
		Short: "Read, write, delete and watch a tenant's keys",
		Long: `Read, write, delete and watch a tenant's keys. Keys are relative to the
tenant's KV space; the proxy keeps every tenant inside its own.`,
		Annotations: map[string]string{clientAnnotation: ""},
	}
	cmd.AddCommand(newKVPutCommand(a), newKVGetCommand(a), newKVDelCommand(a), newKVWatchCommand(a))
	return cmd
}

func tenantFlag(cmd *cobra.Command, tenant *string) {
	cmd.Flags().StringVar(tenant, "tenant", "", "tenant whose keys to use (required)")
	cmd.MarkFlagRequired("tenant")
}

func newKVPutCommand(a *app) *cobra.Command {
	var (
		tenant   string
		file     string
		ttl      int64
		expected int64
	)
	cmd := &cobra.Command{
		Use:   "put --tenant T KEY (VALUE | - | --file F)",
		Short: "Write a key",
		Long: `Write a key. The value is VALUE, or standard input when VALUE is -, or
the content of --file (- is standard input too). Standard input and files
take values of any size up to the proxy's --max-value-bytes (1 MiB by
default), beyond what a command line can hold; a value that is a single
dash is written with --file.`,
		Example: `  confetti kv put --tenant acme /routes/1 '{"uri":"/hello"}'
  confetti kv put --tenant acme /routes/1 '{"uri":"/hi"}' --expect-mod-revision 12
  confetti kv put --tenant acme /locks/leader node-1 --ttl 30
  confetti kv put --tenant acme /certs/web --file web.pem
  generate-config | confetti kv put --tenant acme /config/big -`,
		Args: func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("file") {
				if len(args) != 1 {
					return fmt.Errorf("with --file, give only KEY (the value is the file's content), not %d arguments", len(args))
				}
				return nil
			}
			if len(args) != 2 {
				return fmt.Errorf("give KEY and VALUE (- reads the value from standard input, --file from a file), not %d arguments", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := keys.CheckKey(args[0]); err != nil {
				return err
			}
			var value []byte
			var err error
			switch {
			case cmd.Flags().Changed("file"):
				value, err = readFile(cmd, file)
			case args[1] == "-":
				value, err = readFile(cmd, "-")
			default:
				value = []byte(args[1])
			}
			if err != nil {
				return fmt.Errorf("reading the value: %w", err)
			}
			req := &pb.PutRequest{Tenant: tenant, Key: args[0], Value: value, Ttl: ttl, PrevKv: true}
			if cmd.Flags().Changed("expect-mod-revision") {
				req.ExpectedModRevision = proto.Int64(expected)
			}
			return a.withProxy(cmd.Context(), func(ctx context.Context, c proxyClients) error {
				resp, err := c.kv.Put(ctx, req)
				if err != nil {
					return err
				}
				p := a.printer()
				if p.json {
					return p.value(apijson.Written(req.Key, req.Value, resp))
				}
				if resp.Lease != 0 {
					return p.line("OK rev=%d lease=%d", resp.GetHeader().GetRevision(), resp.Lease)
				}
				return p.line("OK rev=%d", resp.GetHeader().GetRevision())
			})
		},
	}
	tenantFlag(cmd, &tenant)
	cmd.Flags().StringVar(&file, "file", "", "file holding the value; - reads standard input")
	cmd.Flags().Int64Var(&ttl, "ttl", 0, "seconds until the key expires (0: never)")
	cmd.Flags().Int64Var(&expected, "expect-mod-revision", 0, "write only if the key's mod revision is N (0: only if it does not exist)")
	return cmd
}

func newKVGetCommand(a *app) *cobra.Command {
	var (
		tenant   string
		prefix   bool
		limit    int64
		keysOnly bool
	)
	cmd := &cobra.Command{
		Use:   "get --tenant T KEY",
		Short: "Read a key, or every key under a prefix",
		Long: `Read a key, or with --prefix every key starting with KEY (an empty KEY
with --prefix reads the tenant's whole KV space). Simple output is one
'key value' line per key; -w json adds revisions.`,
		Example: `  confetti kv get --tenant acme /routes/1
  confetti kv get --tenant acme /routes/ --prefix
  confetti kv get --tenant acme "" --prefix --keys-only`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := keys.CheckKey(args[0]); err != nil {
				return err
			}
			return a.withProxy(cmd.Context(), func(ctx context.Context, c proxyClients) error {
				resp, err := getAll(ctx, c.kv, &pb.RangeRequest{
					Tenant:   tenant,
					Key:      args[0],
					Prefix:   prefix,
					Limit:    limit,
					KeysOnly: keysOnly,
				})
				if err != nil {
					return err
				}
				p := a.printer()
				if p.json {
					return p.value(apijson.NewList(resp, keysOnly))
				}
				for _, kv := range resp.Kvs {
					if keysOnly {
						err = p.line("%s", kv.Key)
					} else {
						err = p.line("%s %s", kv.Key, printable(kv.Value))
					}
					if err != nil {
						return err
					}
				}
				if resp.More {
					fmt.Fprintf(a.errOut, "(%d of %d keys shown; raise --limit for more)\n", len(resp.Kvs), resp.Count)
				}
				return nil
			})
		},
	}
	tenantFlag(cmd, &tenant)
	cmd.Flags().BoolVar(&prefix, "prefix", false, "read every key starting with KEY")
	cmd.Flags().Int64Var(&limit, "limit", 0, "read at most N keys (0: all)")
	cmd.Flags().BoolVar(&keysOnly, "keys-only", false, "print keys without values")
	return cmd
}

// getAll runs a Range; without a limit it follows the proxy's pages at the
// first page's revision, so the result is one consistent snapshot.
func getAll(ctx context.Context, kv pb.KVClient, req *pb.RangeRequest) (*pb.RangeResponse, error) {
	resp, err := kv.Range(ctx, req)
	if err != nil || req.Limit != 0 || !resp.More || len(resp.Kvs) == 0 {
		return resp, err
	}
	next := proto.Clone(req).(*pb.RangeRequest)
	next.Revision = resp.GetHeader().GetRevision()
	if req.Prefix {
		next.Prefix = false
		next.RangeEnd = clientv3.GetPrefixRangeEnd(req.Key)
		if req.Key == "" {
			next.RangeEnd = "\x00"
		}
	}
	for resp.More {
		next.Key = resp.Kvs[len(resp.Kvs)-1].Key + "\x00"
		page, err := kv.Range(ctx, next)
		if err != nil {
			return nil, err
		}
		resp.Kvs = append(resp.Kvs, page.Kvs...)
		resp.More = page.More && len(page.Kvs) > 0
	}
	return resp, nil
}

func newKVDelCommand(a *app) *cobra.Command {
	var (
		tenant string
		prefix bool
	)
	cmd := &cobra.Command{
		Use:     "del --tenant T KEY",
		Aliases: []string{"delete"},
		Short:   "Delete a key, or every key under a prefix, and print how many",
		Example: `  confetti kv del --tenant acme /routes/1
  confetti kv del --tenant acme /routes/ --prefix`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := keys.CheckKey(args[0]); err != nil {
				return err
			}
			return a.withProxy(cmd.Context(), func(ctx context.Context, c proxyClients) error {
				resp, err := c.kv.DeleteRange(ctx, &pb.DeleteRangeRequest{Tenant: tenant, Key: args[0], Prefix: prefix})
				if err != nil {
					return err
				}
				p := a.printer()
				if p.json {
					return p.value(apijson.NewDeleted(resp))
				}
				return p.line("OK deleted=%d rev=%d", resp.Deleted, resp.GetHeader().GetRevision())
			})
		},
	}
	tenantFlag(cmd, &tenant)
	cmd.Flags().BoolVar(&prefix, "prefix", false, "delete every key starting with KEY")
	return cmd
}

func newKVWatchCommand(a *app) *cobra.Command {
	w := &watcher{}
	cmd := &cobra.Command{
		Use:   "watch --tenant T PREFIX",
		Short: "Print the keys under a prefix, then every change, through a cache node",
		Long: `Subscribe to a prefix of the tenant's KV space through a cache node. The
first lines are the current state (key value rev=R), then one line per
change (PUT key value rev=R, DELETE key rev=R). The last line of the state
and of each transaction ends with token=T: pass a printed token to --from
to see exactly what came after that line; when the cache's history no
longer reaches that far, the current state is printed again. If the cache
node fails, the watch resumes on the next --cache-endpoints entry from its
last token.`,
		Example: `  confetti kv watch --tenant acme /routes/
  confetti kv watch --tenant acme /routes/ --count 1
  confetti kv watch --tenant acme /routes/ --from <token>`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := keys.CheckKey(args[0]); err != nil {
				return err
			}
			w.a = a
			w.prefix = args[0]
			w.p = a.printer()
			return w.run(cmd.Context())
		},
	}
	tenantFlag(cmd, &w.tenant)
	cmd.Flags().StringVar(&w.token, "from", "", "resume after this token (printed by an earlier watch)")
	cmd.Flags().IntVar(&w.count, "count", 0, "exit after N lines, finishing the state or transaction being printed so that the last token printed resumes after it; or after N JSON objects with -w json (0: run until interrupted)")
	return cmd
}

// errCountReached ends a watch that printed --count lines.
var errCountReached = errors.New("count reached")

// watcher is one kv watch: a subscription that fails over between cache
// nodes, resuming from the last token it saw.
type watcher struct {
	a      *app
	p      *printer
	tenant string
	prefix string
	// token is the last token received (or --from); a new stream resumes
	// from it.
	token   string
	count   int
	printed int
}

func (w *watcher) run(ctx context.Context) error {
	eps := w.a.cacheEndpoints
	if len(eps) == 0 {
		return errors.New("no cache node endpoints configured (set --cache-endpoints)")
	}
	backoff := 100 * time.Millisecond
	failures := 0
	for i := 0; ; i = (i + 1) % len(eps) {
		progressed, err := w.stream(ctx, eps[i])
		if errors.Is(err, errCountReached) {
			return nil
		}
		if ctx.Err() != nil {
			w.stopped(ctx)
			return nil
		}
		if !retryable(err) {
			return err
		}
		if progressed {
			failures, backoff = 0, 100*time.Millisecond
		} else {
			failures++
		}
		if failures >= len(eps) {
			return fmt.Errorf("no cache node answered (%s): %s", strings.Join(eps, ","), errorMessage(err))
		}
		next, verb := eps[(i+1)%len(eps)], "trying"
		if w.token != "" {
			verb = "resuming from the last token on"
		}
		reason := errorMessage(err)
		if errors.Is(err, io.EOF) {
			reason = "the node ended the stream"
		}
		fmt.Fprintf(w.a.errOut, "watch: cache %s: %s; %s %s\n", eps[i], reason, verb, next)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			w.stopped(ctx)
			return nil
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// stopped says on standard error that the watch stops, and why (an
// interrupt), with the token to resume from.
func (w *watcher) stopped(ctx context.Context) {
	resume := ""
	if w.token != "" {
		resume = "; resume with --from " + w.token
	}
	fmt.Fprintf(w.a.errOut, "kv watch: %s: stopped%s\n", stopReason(ctx), resume)
}

// retryable reports whether another cache node may serve the watch: the
// node went away or failed, as opposed to refusing the request itself.
func retryable(err error) bool {
	if errors.Is(err, io.EOF) {
		return true
	}
	switch status.Code(err) {
	case codes.InvalidArgument, codes.NotFound, codes.PermissionDenied, codes.Unauthenticated,
		codes.FailedPrecondition, codes.Unimplemented, codes.OutOfRange, codes.AlreadyExists:
		return false
	}
	return true
}

// stream runs one subscription on one cache node until it fails or the
// count is reached. progressed reports whether the node sent anything.
func (w *watcher) stream(ctx context.Context, endpoint string) (progressed bool, err error) {
	cc, err := w.a.dial(ctx, "cache node", "cache-endpoints", []string{endpoint})
	if err != nil {
		return false, status.Error(codes.Unavailable, err.Error())
	}
	defer cc.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := pb.NewCacheClient(cc).Subscribe(ctx)
	if err != nil {
		return false, err
	}
	start := &pb.Start{Tenant: w.tenant, Prefixes: []string{w.prefix}, Identity: cliIdentity, Token: w.token}
	if err := stream.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Start{Start: start}}); err != nil {
		_, err = stream.Recv()
		return false, err
	}
	var reset []*pb.KeyValue
	for {
		msg, err := stream.Recv()
		if err != nil {
			return progressed, err
		}
		progressed = true
		switch m := msg.Response.(type) {
		case *pb.SubscribeResponse_Reset_:
			if m.Reset_.Chunk == 0 {
				reset = reset[:0]
			}
			reset = append(reset, m.Reset_.Kvs...)
			if !m.Reset_.Last {
				continue
			}
			w.token = m.Reset_.Token
			if err := w.printReset(reset, m.Reset_.Token); err != nil {
				return progressed, err
			}
			reset = nil
		case *pb.SubscribeResponse_Events:
			if err := w.printEvents(m.Events); err != nil {
				return progressed, err
			}
		case *pb.SubscribeResponse_Progress:
			w.token = m.Progress.Token
		}
	}
}

// done counts n printed objects or lines, ending with a token, and returns
// errCountReached when the watch has printed --count of them.
func (w *watcher) done(n int) error {
	w.printed += n
	if w.count > 0 && w.printed >= w.count {
		return errCountReached
	}
	return nil
}

// printReset prints the state of a Reset; only its last line carries the
// token, which resumes after the whole state.
func (w *watcher) printReset(kvs []*pb.KeyValue, token string) error {
	if w.p.json {
		reset := apijson.NewReset(kvs, token)
		if err := w.p.value(apijson.Message{Reset: &reset}); err != nil {
			return err
		}
		return w.done(1)
	}
	for i, kv := range kvs {
		line := fmt.Sprintf("%s %s rev=%d", kv.Key, printable(kv.Value), kv.ModRevision)
		if i == len(kvs)-1 {
			line += " token=" + token
		}
		if err := w.p.line("%s", line); err != nil {
			return err
		}
	}
	return w.done(len(kvs))
}

// printEvents prints an Events message's transactions: one line per event,
// the last line of each transaction with the transaction's token, which
// resumes exactly after it. The watch stops only between transactions.
func (w *watcher) printEvents(evs *pb.Events) error {
	if w.p.json {
		events := apijson.NewEvents(evs)
		if err := w.p.value(apijson.Message{Events: &events}); err != nil {
			return err
		}
		if txns := evs.Txns; len(txns) > 0 {
			w.token = txns[len(txns)-1].Token
		}
		return w.done(1)
	}
	for _, txn := range evs.Txns {
		for i, ev := range txn.Events {
			kv := ev.Kv
			var line string
			if ev.Type == pb.Event_DELETE {
				line = fmt.Sprintf("DELETE %s rev=%d", kv.GetKey(), txn.Revision)
			} else {
				line = fmt.Sprintf("PUT %s %s rev=%d", kv.GetKey(), printable(kv.GetValue()), txn.Revision)
			}
			if i == len(txn.Events)-1 {
				line += " token=" + txn.Token
			}
			if err := w.p.line("%s", line); err != nil {
				return err
			}
		}
		w.token = txn.Token
		if err := w.done(len(txn.Events)); err != nil {
			return err
		}
	}
	return nil
}
