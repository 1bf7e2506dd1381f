package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"gopkg.in/yaml.v3"

	"github.com/confetti-io/confetti/bench"
	"github.com/confetti-io/confetti/internal/buildinfo"
	"github.com/confetti-io/confetti/internal/clientconfig"
	"github.com/confetti-io/confetti/internal/tlsconfig"
)

// Built-in client defaults: the endpoints `confetti dev` listens on.
const (
	defaultProxyEndpoint = "127.0.0.1:7700"
	envPrefix            = "CONFETTI_"
	clientAnnotation     = "confetti-client"
)

var defaultCacheEndpoints = []string{"127.0.0.1:7710", "127.0.0.1:7711"}

// app holds what every command shares: the global flags and where output
// goes.
type app struct {
	out    io.Writer
	errOut io.Writer
	// lookupEnv reads the environment; tests replace it.
	lookupEnv func(string) (string, bool)

	endpoints      []string
	cacheEndpoints []string
	writeOut       string
	clientConfig   string
	dialTimeout    time.Duration
	commandTimeout time.Duration
	// apiKey and tls secure the client verbs' connections (security.go);
	// apiKeyFile, when set, holds the key.
	apiKey     string
	apiKeyFile string
	tls        tlsconfig.Files
	// runBench runs a benchmark; tests replace it.
	runBench func(context.Context, bench.Config) (*bench.Results, error)
}

func newApp(out, errOut io.Writer) *app {
	return &app{out: out, errOut: errOut, lookupEnv: os.LookupEnv, runBench: bench.Run}
}

func newRootCommand(a *app) *cobra.Command {
	root := &cobra.Command{
		Use:   "confetti",
		Short: "Confetti: config distribution for many tenants and many subscribers, on etcd",
		Long: `Confetti spreads tenants over several etcd clusters (the shard proxy) and
fans every change out to tens of thousands of subscribers (cache nodes).

Start everything on this machine with 'confetti dev', then use the client
verbs ('tenant', 'kv'). Every flag can also be set with a CONFETTI_<FLAG>
environment variable (--cache-endpoints is CONFETTI_CACHE_ENDPOINTS); a flag
wins over its variable, which wins over the client config file (client
verbs) or --config-file (server roles), which win over the default.`,
		SilenceErrors: true,
		Version:       buildinfo.Get().String(),
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			// Flag and argument errors above show usage; runtime errors
			// below do not.
			cmd.SilenceUsage = true
			return a.resolveFlags(cmd)
		},
	}
	defaultClientConfig, _ := clientconfig.DefaultPath()
	pf := root.PersistentFlags()
	pf.StringSliceVar(&a.endpoints, "endpoints", []string{defaultProxyEndpoint}, "shard proxy gRPC addresses, comma separated")
	pf.StringSliceVar(&a.cacheEndpoints, "cache-endpoints", defaultCacheEndpoints, "cache node gRPC addresses, comma separated (kv watch)")
	pf.StringVarP(&a.writeOut, "write-out", "w", "simple", "output format: simple or json")
	pf.StringVar(&a.clientConfig, "client-config", defaultClientConfig, "client config file (endpoints, cache-endpoints, api-key); written by 'confetti dev'")
	pf.DurationVar(&a.dialTimeout, "dial-timeout", 5*time.Second, "how long to wait for a connection to an endpoint")
	pf.DurationVar(&a.commandTimeout, "command-timeout", 10*time.Second, "how long one request may take")
	a.registerClientSecurityFlags(pf)
	root.SetVersionTemplate("{{.Version}}\n")
	// Defined now rather than when the command runs, so that parsing
	// knows --version takes no value wherever it stands.
	root.InitDefaultVersionFlag()

	root.AddCommand(
		newDevCommand(a),
		newProxyCommand(a),
		newCacheCommand(a),
		newTenantCommand(a),
		newKVCommand(a),
		newLeaseCommand(a),
		newSvcCommand(a),
		newShardCommand(a),
		newKeyCommand(a),
		newInitCommand(a),
		newHealthCommand(a),
		newDemoTenantCommand(a),
		newGatewayCommand(a),
		newDemoBackendCommand(a),
		newItemCommand(a),
		newReleaseCommand(a),
		newBenchCommand(a),
		newChaosCommand(a),
		newVersionCommand(a),
	)
	root.InitDefaultCompletionCmd()
	requireKnownSubcommands(root)
	return root
}

// requireKnownSubcommands makes every command of the tree that only groups
// others ("confetti tenant") fail on an argument that names none of them,
// as a command that takes no arguments does, instead of printing its help
// and succeeding (cobra's way with a command that does not run); alone,
// such a command still prints its help.
func requireKnownSubcommands(cmd *cobra.Command) {
	for _, c := range cmd.Commands() {
		requireKnownSubcommands(c)
	}
	if !cmd.HasSubCommands() || cmd.Runnable() {
		return
	}
	cmd.Args = func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return nil
		}
		// The error says what to run instead; the usage would bury it.
		cmd.SilenceUsage = true
		var names []string
		for _, c := range cmd.Commands() {
			if c.IsAvailableCommand() {
				names = append(names, c.Name())
			}
		}
		hint := ""
		if cmd.SuggestionsMinimumDistance <= 0 {
			// One typo away; at two, "get" would suggest "key".
			cmd.SuggestionsMinimumDistance = 1
		}
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			hint = fmt.Sprintf("; did you mean %s?", strings.Join(s, " or "))
		}
		return fmt.Errorf("unknown command %q for %q%s (its commands are %s; see '%s --help')", args[0], cmd.CommandPath(), hint, strings.Join(names, ", "), cmd.CommandPath())
	}
	cmd.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
}

// resolveFlags fills every flag the command line left unset, in order of
// precedence: the CONFETTI_<FLAG_NAME> environment variable, then, for
// client verbs, the client config file, and, for commands with a
// --config-file flag, that file. A flag given on the command line always
// wins; a flag set nowhere keeps its default.
func (a *app) resolveFlags(cmd *cobra.Command) error {
	fs := cmd.Flags()
	if err := applyEnv(fs, a.lookupEnv); err != nil {
		return err
	}
	if isClientCommand(cmd) {
		if err := a.applyClientConfig(fs); err != nil {
			return err
		}
	}
	if f := fs.Lookup("config-file"); f != nil && f.Value.String() != "" {
		values, err := readConfigFile(f.Value.String())
		if err != nil {
			return err
		}
		if err := applyValues(fs, values, "config file "+f.Value.String()); err != nil {
			return err
		}
	}
	if a.apiKeyFile != "" {
		b, err := os.ReadFile(a.apiKeyFile)
		if err != nil {
			return fmt.Errorf("--api-key-file: %w", err)
		}
		a.apiKey = strings.TrimSpace(string(b))
	}
	if a.writeOut != "simple" && a.writeOut != "json" {
		return fmt.Errorf("--write-out must be simple or json, not %q", a.writeOut)
	}
	return nil
}

// envName is the variable that sets a flag: --cache-endpoints is
// CONFETTI_CACHE_ENDPOINTS.
func envName(flag string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// applyEnv sets every flag not given on the command line whose variable is
// set and not empty.
func applyEnv(fs *pflag.FlagSet, lookup func(string) (string, bool)) error {
	var errs []error
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || f.Name == "help" {
			return
		}
		v, ok := lookup(envName(f.Name))
		if !ok || v == "" {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: %w", envName(f.Name), v, err))
		}
	})
	return errors.Join(errs...)
}

// applyValues sets, from a file's values, every flag not set on the
// command line or by a variable. A key that names no flag is an error.
func applyValues(fs *pflag.FlagSet, values map[string]string, source string) error {
	names := make([]string, 0, len(values))
	for k := range values {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, name := range names {
		f := fs.Lookup(name)
		if f == nil || name == "config-file" || name == "help" {
			return fmt.Errorf("%s: unknown key %q (keys are this command's flag names, see --help)", source, name)
		}
		if f.Changed {
			continue
		}
		if err := fs.Set(name, values[name]); err != nil {
			return fmt.Errorf("%s: %s: %w", source, name, err)
		}
	}
	return nil
}

// readConfigFile reads a YAML file whose keys are flag names. Lists become
// comma-separated values.
func readConfigFile(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	var raw map[string]any
	dec := yaml.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&raw); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	values := make(map[string]string, len(raw))
	for k, v := range raw {
		s, err := flagString(v)
		if err != nil {
			return nil, fmt.Errorf("config file %s: %s: %w", path, k, err)
		}
		values[k] = s
	}
	return values, nil
}

func flagString(v any) (string, error) {
	switch v := v.(type) {
	case nil:
		return "", nil
	case []any:
		parts := make([]string, len(v))
		for i, e := range v {
			s, err := flagString(e)
			if err != nil {
				return "", err
			}
			parts[i] = s
		}
		return strings.Join(parts, ","), nil
	case map[string]any:
		return "", errors.New("a flag value cannot be a mapping")
	default:
		return fmt.Sprint(v), nil
	}
}

func isClientCommand(cmd *cobra.Command) bool {
	for c := cmd; c != nil; c = c.Parent() {
		if _, ok := c.Annotations[clientAnnotation]; ok {
			return true
		}
	}
	return false
}

// applyClientConfig fills the endpoint flags from the client config file.
func (a *app) applyClientConfig(fs *pflag.FlagSet) error {
	path, err := clientconfig.Resolve(a.clientConfig)
	if err != nil {
		// Without a config directory there is no file to read.
		return nil
	}
	cfg, err := clientconfig.Load(path)
	if err != nil {
		return err
	}
	values := map[string]string{}
	if len(cfg.Endpoints) > 0 {
		values["endpoints"] = strings.Join(cfg.Endpoints, ",")
	}
	if len(cfg.CacheEndpoints) > 0 {
		values["cache-endpoints"] = strings.Join(cfg.CacheEndpoints, ",")
	}
	if cfg.APIKey != "" {
		values["api-key"] = cfg.APIKey
	}
	return applyValues(fs, values, "client config "+path)
}

// clientConn returns a connection to endpoints with the client's
// security options; it connects when first used.
func (a *app) clientConn(endpoints []string) (*grpc.ClientConn, error) {
	r := manual.NewBuilderWithScheme("confetti")
	addrs := make([]resolver.Address, len(endpoints))
	for i, ep := range endpoints {
		addrs[i] = resolver.Address{Addr: ep}
		// With TLS, each endpoint's certificate is checked against its
		// own host, not the resolver's target.
		if host, _, err := net.SplitHostPort(ep); err == nil {
			addrs[i].ServerName = host
		}
	}
	r.InitialState(resolver.State{Addresses: addrs})
	sec, err := a.securityDialOptions()
	if err != nil {
		return nil, err
	}
	cc, err := grpc.NewClient(r.Scheme()+":///confetti", append([]grpc.DialOption{
		grpc.WithResolvers(r),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
	}, sec...)...)
	if err != nil {
		return nil, err
	}
	return cc, nil
}

// dial connects to the first reachable of endpoints, waiting at most
// --dial-timeout. what names the service and flag the flag that sets its
// endpoints, for error messages.
func (a *app) dial(ctx context.Context, what, flag string, endpoints []string) (*grpc.ClientConn, error) {
	if len(endpoints) == 0 {
		return nil, fmt.Errorf("no %s endpoints configured (set --%s)", what, flag)
	}
	cc, err := a.clientConn(endpoints)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, a.dialTimeout)
	defer cancel()
	cc.Connect()
	for {
		s := cc.GetState()
		switch s {
		case connectivity.Ready:
			return cc, nil
		case connectivity.TransientFailure:
			// Every endpoint refused or failed the connection.
			cc.Close()
			return nil, fmt.Errorf("cannot connect to the %s at %s (start one with 'confetti dev', or set --%s)", what, strings.Join(endpoints, ","), flag)
		}
		if !cc.WaitForStateChange(ctx, s) {
			cc.Close()
			if errors.Is(ctx.Err(), context.Canceled) {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("no answer from the %s at %s within %s (--dial-timeout)", what, strings.Join(endpoints, ","), a.dialTimeout)
		}
	}
}

// newLogger logs to w at level, as JSON for server roles or as console
// lines for dev.
func newLogger(w io.Writer, level string, console bool) (*zap.Logger, error) {
	lvl, err := zap.ParseAtomicLevel(level)
	if err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	ec := zap.NewProductionEncoderConfig()
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if console {
		ec.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(ec)
	} else {
		enc = zapcore.NewJSONEncoder(ec)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), lvl), zap.ErrorOutput(zapcore.AddSync(w))), nil
}
