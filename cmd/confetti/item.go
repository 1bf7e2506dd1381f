package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	pb "github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/gateway"
	"github.com/confetti-io/confetti/internal/release"
)

func newItemCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "item",
		Short: "Publish versioned config items and read their history",
		Long: `Publish versioned config items and read their history. Each publish
writes the next immutable version of an item; what gateways receive is
decided by the item's release (see 'confetti release').`,
		Annotations: map[string]string{clientAnnotation: ""},
	}
	cmd.AddCommand(newItemPublishCommand(a), newItemHistoryCommand(a), newItemShowCommand(a),
		newItemDiffCommand(a), newItemListCommand(a), newItemSchemaCommand(a), newItemWatchCommand(a))
	return cmd
}

// readFile reads a file named by a flag; "-" is standard input.
func readFile(cmd *cobra.Command, name string) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(cmd.InOrStdin())
	}
	return os.ReadFile(name)
}

func newItemPublishCommand(a *app) *cobra.Command {
	var tenant, file, message string
	cmd := &cobra.Command{
		Use:   "publish --tenant T ITEM --file F",
		Short: "Publish the content of a file as the item's next version",
		Long: `Publish the content of a file as the item's next version. The first
version of an item also becomes its stable release. Content identical to
the latest version, or failing the item's JSON Schema, is refused.`,
		Example: `  confetti item publish --tenant acme routes --file routes.json --message "add /hello"
  cat routes.json | confetti item publish --tenant acme routes --file -`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			content, err := readFile(cmd, file)
			if err != nil {
				return err
			}
			return a.withProxy(cmd.Context(), func(ctx context.Context, c proxyClients) error {
				v, err := c.releases.Publish(ctx, &pb.PublishRequest{Tenant: tenant, Item: args[0], Content: content, Message: message})
				if err != nil {
					return err
				}
				return a.show(v, func() []string {
					return []string{fmt.Sprintf("published %s version %d (sha256 %s)", v.Item, v.Version, short(v.ContentHash))}
				})
			})
		},
	}
	tenantFlag(cmd, &tenant)
	cmd.Flags().StringVar(&file, "file", "", "file holding the content; - reads standard input (required)")
	cmd.Flags().StringVar(&message, "message", "", "what changed, kept with the version")
	cmd.MarkFlagRequired("file")
	return cmd
}

// show prints m as JSON with -w json, else the lines lines returns.
func (a *app) show(m proto.Message, lines func() []string) error {
	p := a.printer()
	if p.json {
		return p.message(m)
	}
	for _, l := range lines() {
		if err := p.line("%s", l); err != nil {
			return err
		}
	}
	return nil
}

func short(hash string) string { return hash[:min(12, len(hash))] }

func unixTime(sec int64) string { return time.Unix(sec, 0).UTC().Format(time.RFC3339) }

func newItemHistoryCommand(a *app) *cobra.Command {
	var tenant string
	cmd := &cobra.Command{
		Use:     "history --tenant T ITEM",
		Short:   "List an item's versions, newest first",
		Example: `  confetti item history --tenant acme routes`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withProxy(cmd.Context(), func(ctx context.Context, c proxyClients) error {
				all := &pb.HistoryResponse{}
				req := &pb.HistoryRequest{Tenant: tenant, Item: args[0]}
				for {
					resp, err := c.releases.History(ctx, req)
					if err != nil {
						return err
					}
					all.Versions = append(all.Versions, resp.Versions...)
					if resp.NextPageToken == "" {
						break
					}
					req.PageToken = resp.NextPageToken
				}
				return a.show(all, func() (lines []string) {
					for _, v := range all.Versions {
						lines = append(lines, fmt.Sprintf("%d %s %s %s %s", v.Version, unixTime(v.CreateTime), v.Author, short(v.ContentHash), printable([]byte(v.Message))))
					}
					return lines
				})
			})
		},
	}
	tenantFlag(cmd, &tenant)
	return cmd
}

func newItemShowCommand(a *app) *cobra.Command {
	var (
		tenant  string
		version int64
	)
	cmd := &cobra.Command{
		Use:   "show --tenant T ITEM",
		Short: "Print the content of a version (default: the latest)",
		Example: `  confetti item show --tenant acme routes
  confetti item show --tenant acme routes --version 3 -w json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withProxy(cmd.Context(), func(ctx context.Context, c proxyClients) error {
				v, err := c.releases.GetVersion(ctx, &pb.GetVersionRequest{Tenant: tenant, Item: args[0], Version: version})
				if err != nil {
					return err
				}
				p := a.printer()
				if p.json {
					return p.message(v)
				}
				_, err = p.w.Write(v.Content)
				return err
			})
		},
	}
	tenantFlag(cmd, &tenant)
	cmd.Flags().Int64Var(&version, "version", 0, "version to show (0: the latest)")
	return cmd
}

func newItemDiffCommand(a *app) *cobra.Command {
	var tenant string
	cmd := &cobra.Command{
		Use:     "diff --tenant T ITEM A B",
		Short:   "Show the unified diff from version A to version B",
		Example: `  confetti item diff --tenant acme routes 1 2`,
		Args:    cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			var versions [2]int64
			for i, s := range args[1:] {
				v, err := strconv.ParseInt(s, 10, 64)
				if err != nil || v < 1 {
					return fmt.Errorf("version %q must be a number from 1", s)
				}
				versions[i] = v
			}
			return a.withProxy(cmd.Context(), func(ctx context.Context, c proxyClients) error {
				var contents [2]string
				for i, v := range versions {
					iv, err := c.releases.GetVersion(ctx, &pb.GetVersionRequest{Tenant: tenant, Item: args[0], Version: v})
					if err != nil {
						return err
					}
					contents[i] = string(iv.Content)
				}
				label := func(v int64) string { return fmt.Sprintf("%s v%d", args[0], v) }
				diff := release.UnifiedDiff(contents[0], contents[1], label(versions[0]), label(versions[1]))
				p := a.printer()
				if p.json {
					return json.NewEncoder(p.w).Encode(map[string]any{"item": args[0], "from": versions[0], "to": versions[1], "diff": diff})
				}
				_, err := io.WriteString(p.w, diff)
				return err
			})
		},
	}
	tenantFlag(cmd, &tenant)
	return cmd
}

func newItemListCommand(a *app) *cobra.Command {
	var tenant string
	cmd := &cobra.Command{
		Use:   "list --tenant T",
		Short: "List a tenant's items",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withProxy(cmd.Context(), func(ctx context.Context, c proxyClients) error {
				resp, err := c.releases.ListItems(ctx, &pb.ListItemsRequest{Tenant: tenant})
				if err != nil {
					return err
				}
				return a.show(resp, func() []string { return resp.Items })
			})
		},
	}
	tenantFlag(cmd, &tenant)
	return cmd
}

func newItemSchemaCommand(a *app) *cobra.Command {
	var (
		tenant, file string
		clear        bool
	)
	cmd := &cobra.Command{
		Use:   "schema --tenant T ITEM (--file S | --clear)",
		Short: "Set or clear the JSON Schema every new version of an item must pass",
		Example: `  confetti item schema --tenant acme routes --file routes.schema.json
  confetti item schema --tenant acme routes --clear`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if (file == "") == !clear {
				return fmt.Errorf("give --file with a JSON Schema, or --clear")
			}
			var schema []byte
			if file != "" {
				var err error
				if schema, err = readFile(cmd, file); err != nil {
					return err
				}
				if len(schema) == 0 {
					return fmt.Errorf("%s is empty; use --clear to remove the schema", file)
				}
			}
			return a.withProxy(cmd.Context(), func(ctx context.Context, c proxyClients) error {
				resp, err := c.releases.SetSchema(ctx, &pb.SetSchemaRequest{Tenant: tenant, Item: args[0], Schema: schema})
				if err != nil {
					return err
				}
				return a.show(resp, func() []string {
					if clear {
						return []string{"cleared the schema of " + args[0]}
					}
					return []string{"set the schema of " + args[0]}
				})
			})
		},
	}
	tenantFlag(cmd, &tenant)
	cmd.Flags().StringVar(&file, "file", "", "file holding the JSON Schema; - reads standard input")
	cmd.Flags().BoolVar(&clear, "clear", false, "remove the item's schema")
	return cmd
}

func newItemWatchCommand(a *app) *cobra.Command {
	var (
		tenant, nack string
		identity     gateway.Identity
		count        int
	)
	cmd := &cobra.Command{
		Use:   "watch --tenant T ITEM",
		Short: "Watch the version of an item a gateway with an identity receives",
		Long: `Watch the version of an item that a gateway with --instance-id and
--labels receives, as the item's release resolves it, and acknowledge each
version as a gateway would (so 'confetti release status' counts it), or
refuse each with --nack REASON. One line per version received, or refused.`,
		Example: `  confetti item watch --tenant demo routes --instance-id gw-a --labels zone=a
  confetti item watch --tenant demo routes --instance-id gw-b --labels zone=b --nack "bad upstream"`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			item := args[0]
			if identity.InstanceID == "" {
				identity.InstanceID, _ = os.Hostname()
			}
			cfg := gateway.Config{Endpoints: a.cacheEndpoints, Tenant: tenant, Items: []string{item}, Identity: identity, APIKey: a.apiKey}
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			var mu sync.Mutex
			printed := 0
			// version names the version kv carries and the rule that
			// chose it: "routes v2 (gray v2)".
			version := func(kv *pb.KeyValue) string {
				rule := "stable"
				if g := kv.GetItem().GetGrayId(); g != "" {
					rule = "gray " + g
				}
				return fmt.Sprintf("%s v%d (%s)", args[0], kv.GetItem().GetVersion(), rule)
			}
			printLine := func(format string, args ...any) {
				mu.Lock()
				defer mu.Unlock()
				fmt.Fprintf(a.out, "%s: "+format+"\n", append([]any{identity.InstanceID}, args...)...)
				if printed++; count > 0 && printed >= count {
					cancel()
				}
			}
			print := func(kv *pb.KeyValue, ok bool) {
				switch {
				case !ok:
					printLine("no version of %s", args[0])
				case kv.GetItem() == nil:
					printLine("%s (no version)", args[0])
				default:
					printLine("%s %s", version(kv), bytes.TrimRight(kv.GetValue(), "\n"))
				}
			}
			if nack != "" {
				cfg.Validate = func(k string, kv *pb.KeyValue) error {
					if kv.GetKind() != pb.KeyValue_ITEM || k != item {
						return nil
					}
					printLine("%s refused: %s", version(kv), nack)
					return errors.New(nack)
				}
			}
			tlsCfg, err := a.clientTLS()
			if err != nil {
				return err
			}
			cfg.TLS = tlsCfg
			c, err := gateway.New(cfg)
			if err != nil {
				return err
			}
			defer c.Close()
			c.OnChange(func(ch gateway.Change) {
				for _, u := range ch.Updates {
					if u.Kind == pb.KeyValue_ITEM && u.Key == item {
						kv, ok := ch.View.Item(item)
						print(kv, ok)
					}
				}
			})
			if err := c.Start(ctx); err != nil {
				return err
			}
			select {
			case <-c.Ready():
				if _, ok := c.Item(item); !ok {
					print(nil, false)
				}
			case <-ctx.Done():
			}
			<-ctx.Done()
			if cmd.Context().Err() != nil {
				fmt.Fprintf(a.errOut, "item watch: %s: stopped\n", stopReason(cmd.Context()))
			}
			return nil
		},
	}
	fs := cmd.Flags()
	tenantFlag(cmd, &tenant)
	fs.StringVar(&identity.InstanceID, "instance-id", "", "the gateway's id, for percentage and instance rules (default: the host name)")
	fs.StringToStringVar(&identity.Labels, "labels", nil, "the gateway's labels, for selector rules: k=v comma separated (zone=a,tier=edge)")
	fs.StringVar(&nack, "nack", "", "refuse every version with this reason instead of acknowledging it")
	fs.IntVar(&count, "count", 0, "exit after printing this many versions (0: run until interrupted)")
	return cmd
}
