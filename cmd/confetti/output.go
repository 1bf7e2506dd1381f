package main

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/confetti-io/confetti/internal/apijson"
	"github.com/confetti-io/confetti/internal/clientconfig"
)

// printer writes results either as simple text lines or, with -w json, as
// one JSON object per line: keys in the shape of the HTTP KV routes
// (package apijson), every other message as the HTTP API's generated
// routes write it (protojson with the proto field names).
type printer struct {
	w    io.Writer
	json bool
}

func (a *app) printer() *printer {
	return &printer{w: a.out, json: a.writeOut == "json"}
}

// message prints m as one line of JSON, with the proto field names.
func (p *printer) message(m proto.Message) error {
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	_, err = p.w.Write(b)
	return err
}

// value prints v, one of the shapes of package apijson, as one line of
// JSON.
func (p *printer) value(v any) error {
	return apijson.Encode(p.w, v)
}

// line prints one line of simple output.
func (p *printer) line(format string, args ...any) error {
	_, err := fmt.Fprintf(p.w, format+"\n", args...)
	return err
}

// printable shows a value as text, quoting it when it holds bytes that
// would garble a terminal or a line-oriented reader.
func printable(b []byte) string {
	s := string(b)
	for _, r := range s {
		if r == '\n' || r == '\r' || r == '\uFFFD' || (r < 0x20 && r != '\t') {
			return strconv.Quote(s)
		}
	}
	return s
}

// errorMessage is what the user sees after "Error: ": the message of a
// gRPC status, else the error's text.
func errorMessage(err error) string {
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		s := se.GRPCStatus()
		if s.Code() == codes.Internal && strings.Contains(s.Message(), "invalid UTF-8") {
			// gRPC refused to send the request: a proto string field
			// holds bytes that are not UTF-8.
			return "a key, name or other text argument is not valid UTF-8: keys and names are UTF-8 strings (" + s.Message() + ")"
		}
		return s.Message()
	}
	return strings.TrimSpace(err.Error())
}

// errorMessage is errorMessage(err) with what only the CLI knows: a server
// that refused a request for want of an API key says how a gRPC or HTTP
// client sends one; the CLI says how it is given one.
func (a *app) errorMessage(err error) string {
	msg := errorMessage(err)
	if status.Code(err) == codes.Unauthenticated && a.apiKey == "" {
		where := "api-key in the client config file (--client-config)"
		if path, perr := clientconfig.Resolve(a.clientConfig); perr == nil {
			where = "api-key in the client config file " + path
		}
		msg += "\nThis command sent no API key: pass one with --api-key KEY, the CONFETTI_API_KEY variable or " + where + "."
	}
	return msg
}
