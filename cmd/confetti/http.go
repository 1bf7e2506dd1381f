package main

import (
	"crypto/tls"
	"errors"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/confetti-io/confetti/internal/tlsconfig"
)

// gatewayDialOptions are how the proxy's HTTP gateway dials the proxy's
// own gRPC listener, whose TLS files are listener: plaintext when it has
// none; TLS without checking the certificate when it has one, since the
// gateway dials the port this process has just bound, on loopback, so the
// peer can only be this process. A listener that requires client
// certificates (--cacert) would need a client certificate for the gateway
// as well, which there is no flag for yet.
func gatewayDialOptions(listener tlsconfig.Files) ([]grpc.DialOption, error) {
	switch {
	case listener.Empty():
		return nil, nil
	case listener.CA != "":
		return nil, errors.New("--http-addr cannot be served beside a gRPC listener that requires client certificates (--cacert) yet; disable it with --http-addr=''")
	}
	creds := credentials.NewTLS(&tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12})
	return []grpc.DialOption{grpc.WithTransportCredentials(creds)}, nil
}
