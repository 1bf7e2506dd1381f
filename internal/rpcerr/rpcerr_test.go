package rpcerr

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestStatus(t *testing.T) {
	errNotFound := New(codes.NotFound, "pkg: thing not found")
	for _, tc := range []struct {
		name string
		err  error
		code codes.Code
		msg  string
	}{
		{name: "sentinel", err: errNotFound, code: codes.NotFound, msg: "pkg: thing not found"},
		{name: "wrapped sentinel", err: fmt.Errorf("%w: %q (create it first)", errNotFound, "x"), code: codes.NotFound, msg: `pkg: thing not found: "x" (create it first)`},
		{name: "status", err: status.Error(codes.Aborted, "conflict"), code: codes.Aborted, msg: "conflict"},
		{name: "deadline", err: fmt.Errorf("wait: %w", context.DeadlineExceeded), code: codes.DeadlineExceeded, msg: "wait: context deadline exceeded"},
		{name: "plain", err: errors.New("boom"), code: codes.Unknown, msg: "boom"},
		{name: "sentinel wrapping a status", err: fmt.Errorf("%w: %w", errNotFound, status.Error(codes.Unavailable, "etcd down")), code: codes.NotFound, msg: "pkg: thing not found: rpc error: code = Unavailable desc = etcd down"},
		{name: "wrapped status", err: fmt.Errorf("call: %w", status.Error(codes.Aborted, "conflict")), code: codes.Aborted, msg: "call: rpc error: code = Aborted desc = conflict"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := status.Convert(Status(tc.err))
			if s.Code() != tc.code || s.Message() != tc.msg {
				t.Fatalf("got %v %q, want %v %q", s.Code(), s.Message(), tc.code, tc.msg)
			}
			if !errors.Is(tc.err, tc.err) {
				t.Fatal("errors.Is broken")
			}
		})
	}
	if Status(nil) != nil {
		t.Fatal("Status(nil) != nil")
	}
}
