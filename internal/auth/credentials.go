package auth

import (
	"context"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// apiKeyCredentials sends an API key with every RPC.
type apiKeyCredentials struct{ key string }

var _ credentials.PerRPCCredentials = apiKeyCredentials{}

func (c apiKeyCredentials) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{MetadataKey: c.key}, nil
}

// RequireTransportSecurity is false so that keys also work over the
// plaintext loopback of `confetti dev`; across machines, use TLS.
func (apiKeyCredentials) RequireTransportSecurity() bool { return false }

// WithAPIKey is a dial option that sends key as the x-api-key metadata of
// every RPC on the connection.
func WithAPIKey(key string) grpc.DialOption {
	return grpc.WithPerRPCCredentials(apiKeyCredentials{key: key})
}

// HeaderMatcher maps the X-API-Key HTTP header to the x-api-key gRPC
// metadata, for HTTP front ends (grpc-gateway's WithIncomingHeaderMatcher)
// that forward requests to the gRPC server. Other headers are not matched.
func HeaderMatcher(header string) (string, bool) {
	if strings.EqualFold(header, HeaderName) {
		return MetadataKey, true
	}
	return "", false
}
