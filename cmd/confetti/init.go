package main

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/confetti-io/confetti/internal/bootstrap"
	"github.com/confetti-io/confetti/internal/tlsconfig"
)

func newInitCommand(a *app) *cobra.Command {
	var (
		metaEndpoints []string
		shards        []string
		rootUser      string
		rootPW        secretFlag
		user          string
		userPW        secretFlag
		tlsFiles      tlsconfig.Files
		keyFile       string
		secretFile    string
		secretName    string
		printKey      bool
		timeout       time.Duration
	)
	cmd := &cobra.Command{
		Use:   "init --meta-endpoints URL[,URL...] --shard ID=URL[,URL...] ...",
		Short: "Set up a Confetti cluster on its etcd clusters: auth, Confetti's etcd user, shards, the operator key (idempotent)",
		Long: `Set up a Confetti cluster on its etcd clusters, in one idempotent step:

  - turn etcd auth on where it is off, with root's password (--root-password-file);
  - create Confetti's etcd role and user (--etcd-username, --etcd-password-file)
    on meta and every shard, with readwrite on /confetti/ and nothing else;
  - register each --shard in meta, after the check 'confetti shard add' makes;
  - register the operator API key: the one in --operator-key-file if the file
    holds one, else a new one written there (mode 0600).

Everything is checked before anything changes: wrong root credentials, an
unreachable cluster or a cluster another Confetti set up fail with nothing
changed. Run again, it changes nothing and says so. confetti dev, the compose
cluster and the Helm chart all run it.

Deployments should give etcd JWT auth tokens: etcd's default simple tokens
die with the etcd process that issued them, so after an etcd restart every
client authenticates again (measured: 5 to 30 s without writes for that
shard's tenants). 'confetti init jwt-keys --dir D' makes the key pair for
etcd's --auth-token jwt,pub-key=D/jwt-pub.pem,priv-key=D/jwt-priv.pem,sign-method=ES256.`,
		Example: `  confetti init --meta-endpoints http://meta-1:2379 --shard shard-a=http://a-1:2379,http://a-2:2379,http://a-3:2379 \
      --root-password-file /run/secrets/etcd-root --etcd-password-file /run/secrets/etcd-confetti \
      --operator-key-file /run/secrets/operator-key`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := bootstrap.Config{MetaEndpoints: metaEndpoints, User: user, Timeout: timeout}
			if rootUser != "root" {
				return fmt.Errorf("--root-username %q: etcd turns auth on only for its user root", rootUser)
			}
			var err error
			if cfg.RootPassword, err = rootPW.read("root-password"); err != nil {
				return err
			}
			if cfg.Password, err = userPW.read("etcd-password"); err != nil {
				return err
			}
			for _, s := range shards {
				id, urls, ok := strings.Cut(s, "=")
				if !ok || id == "" || urls == "" {
					return fmt.Errorf("--shard %q: give ID=URL[,URL...], as in --shard shard-a=http://10.0.0.1:2379", s)
				}
				cfg.Shards = append(cfg.Shards, bootstrap.Shard{ID: id, Endpoints: strings.Split(urls, ",")})
			}
			if cfg.TLS, err = tlsconfig.Client(tlsFiles); err != nil {
				return fmt.Errorf("--etcd-cert/--etcd-key/--etcd-cacert: %w", err)
			}
			if keyFile != "" {
				b, err := os.ReadFile(keyFile)
				switch {
				case err == nil:
					cfg.OperatorKey = strings.TrimSpace(string(b))
				case !errors.Is(err, fs.ErrNotExist):
					return fmt.Errorf("--operator-key-file: %w", err)
				}
			}
			if cfg.OperatorKey == "" && keyFile == "" && secretFile == "" && !printKey {
				return errors.New("a new operator key would be lost: give --operator-key-file FILE (written there, or read from there on later runs), --operator-key-secret FILE or --print-key")
			}
			lg, err := newLogger(a.errOut, "warn", false)
			if err != nil {
				return err
			}
			cfg.Logger = lg
			res, err := bootstrap.Init(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			if keyFile != "" && cfg.OperatorKey == "" {
				if err := writeSecretFile(keyFile, []byte(res.OperatorKey+"\n")); err != nil {
					return fmt.Errorf("--operator-key-file: %w (the new key is %s: keep it)", err, res.OperatorKey)
				}
			}
			if secretFile != "" {
				manifest := fmt.Sprintf("apiVersion: v1\nkind: Secret\nmetadata:\n  name: %s\ntype: Opaque\ndata:\n  operator-key: %s\n",
					secretName, base64.StdEncoding.EncodeToString([]byte(res.OperatorKey)))
				if err := writeSecretFile(secretFile, []byte(manifest)); err != nil {
					return fmt.Errorf("--operator-key-secret: %w", err)
				}
			}
			p := a.printer()
			if len(res.Changes) == 0 {
				if err := p.line("nothing to do: Confetti cluster %s is set up (meta, %d shards, the operator key)", res.ClusterID, len(cfg.Shards)); err != nil {
					return err
				}
			}
			for _, c := range res.Changes {
				if err := p.line("%s", c); err != nil {
					return err
				}
			}
			switch {
			case printKey:
				return p.line("operator key %s", res.OperatorKey)
			case keyFile != "":
				return p.line("operator key in %s", keyFile)
			}
			return nil
		},
	}
	cmd.AddCommand(newInitJWTKeysCommand(a))
	f := cmd.Flags()
	f.StringSliceVar(&metaEndpoints, "meta-endpoints", nil, "client URLs of the meta etcd cluster, comma separated (required)")
	f.StringArrayVar(&shards, "shard", nil, "a shard: ID=URL[,URL...] (repeat for each shard)")
	f.StringVar(&rootUser, "root-username", "root", "etcd's root user (etcd turns auth on only for root)")
	rootPW.register(f, "root-password", "etcd root's password: set where auth is off, logged in with where it is on")
	f.StringVar(&user, "etcd-username", "confetti", "Confetti's own etcd user, created with readwrite on /confetti/ only")
	userPW.register(f, "etcd-password", "password of --etcd-username (the proxies' and cache nodes' --etcd-password-file)")
	f.StringVar(&tlsFiles.Cert, "etcd-cert", "", "client certificate for etcd (PEM)")
	f.StringVar(&tlsFiles.Key, "etcd-key", "", "key of --etcd-cert (PEM)")
	f.StringVar(&tlsFiles.CA, "etcd-cacert", "", "CA bundle that verifies the etcd servers (PEM)")
	f.StringVar(&keyFile, "operator-key-file", "", "file of the operator API key: registered if it holds one, else a new key is written there (mode 0600)")
	f.StringVar(&secretFile, "operator-key-secret", "", "also write the operator key as a Kubernetes Secret manifest to this file (key operator-key)")
	f.StringVar(&secretName, "operator-key-secret-name", "confetti-operator-key", "name of the Secret --operator-key-secret writes")
	f.BoolVar(&printKey, "print-key", false, "print the operator key on standard output")
	f.DurationVar(&timeout, "timeout", 10*time.Second, "bound of each step against one etcd cluster")
	cmd.MarkFlagRequired("meta-endpoints")
	return cmd
}

func newInitJWTKeysCommand(a *app) *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "jwt-keys --dir DIR",
		Short: "Make the key pair of etcd's JWT auth tokens in DIR (kept if there already)",
		Long: `Make the ECDSA P-256 key pair etcd signs its JWT auth tokens with, in DIR
(jwt-priv.pem, mode 0600, and jwt-pub.pem), unless DIR holds one already:
every member of a cluster must use the same keys. Start each etcd member
with the --auth-token this command prints.`,
		Args: cobra.NoArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			wrote, err := bootstrap.WriteJWTKeys(dir)
			if err != nil {
				return err
			}
			p := a.printer()
			if !wrote {
				if err := p.line("kept the keys in %s", dir); err != nil {
					return err
				}
			}
			return p.line("--auth-token %s", bootstrap.JWTAuthToken(dir))
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "directory of the key pair (required)")
	cmd.MarkFlagRequired("dir")
	return cmd
}

// secretFlag is a secret given as a flag (discouraged: it shows in ps), a
// file, or the flag's CONFETTI_ variable.
type secretFlag struct{ value, file string }

func (s *secretFlag) register(f interface {
	StringVar(*string, string, string, string)
}, name, usage string) {
	f.StringVar(&s.value, name, "", usage+" (prefer --"+name+"-file or CONFETTI_"+strings.ToUpper(strings.ReplaceAll(name, "-", "_"))+")")
	f.StringVar(&s.file, name+"-file", "", "file holding --"+name)
}

// read returns the secret.
func (s *secretFlag) read(name string) (string, error) {
	if s.file == "" {
		if s.value == "" {
			return "", fmt.Errorf("no --%s: give --%s-file or CONFETTI_%s", name, name, strings.ToUpper(strings.ReplaceAll(name, "-", "_")))
		}
		return s.value, nil
	}
	if s.value != "" {
		return "", fmt.Errorf("give --%s or --%s-file, not both", name, name)
	}
	b, err := os.ReadFile(s.file)
	if err != nil {
		return "", fmt.Errorf("--%s-file: %w", name, err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// optional returns the secret, or "" when none is given.
func (s *secretFlag) optional(name string) (string, error) {
	if s.value == "" && s.file == "" {
		return "", nil
	}
	return s.read(name)
}

// writeSecretFile writes a secret with mode 0600, atomically.
func writeSecretFile(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
