// Package clientconfig reads and writes the confetti CLI's client
// configuration, a small YAML file in the spirit of kubeconfig that tells
// the client verbs where the cluster is:
//
//	endpoints: [127.0.0.1:7700]
//	cache-endpoints: [127.0.0.1:7710, 127.0.0.1:7711]
//
// The file lives at os.UserConfigDir()/confetti/client.yaml unless the
// --client-config flag or the CONFETTI_CLIENT_CONFIG variable names another
// path. `confetti dev` writes it; the client verbs read it, below their
// flags and CONFETTI_* variables. A missing file is an empty configuration.
// Save replaces the file atomically with mode 0600, since it may hold an
// API key.
package clientconfig
