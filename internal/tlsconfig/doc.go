// Package tlsconfig builds the TLS configurations of Confetti's listeners
// and clients from PEM files, with etcd's conventions: a certificate and
// key identify the side that holds them, and a CA bundle verifies the other
// side. A server given a CA bundle requires and verifies client
// certificates (mutual TLS); a client given one verifies the server with it
// instead of the system roots:
//
//	cfg, err := tlsconfig.Server(tlsconfig.Files{Cert: "proxy.pem", Key: "proxy-key.pem", CA: "ca.pem"})
//	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)))
//
// Certificates are read once; restart a process to pick up renewed ones.
package tlsconfig
