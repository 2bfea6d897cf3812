package main

import (
	"context"
	"io"
)

func runCheck(ctx context.Context, args []string, stdout io.Writer, getenv func(string) string) error {
	return nil
}
