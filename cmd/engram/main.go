// Command engram is the one binary of the engram homeserver: serve,
// generate-config, register-user, hash-password, replay, bench.
package main

import (
	"fmt"
	"io"
	"os"
)

const usage = `engram: an event-sourced Matrix homeserver

usage:
  engram serve [--config engram.yaml] [--dev] [flags]   run the server (flags: engram serve -h)
  engram generate-config --server-name NAME [--data-dir DIR]
  engram register-user [-u USER] [-p PASSWORD] [-a|--no-admin] (-c CONFIG | -k SECRET) [URL]
  engram hash-password [-p PASSWORD]
  engram replay --data-dir DIR [--verify]
  engram rotate-key [--config engram.yaml] [--data-dir DIR] [--signing-key-path FILE]
  engram bench --hs URL --scenario NAME [...]
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = serve(args[1:], stderr)
	case "generate-config":
		err = generateConfig(args[1:], stdout)
	case "register-user":
		err = registerUser(args[1:], stdin, stdout, stderr)
	case "hash-password":
		err = hashPassword(args[1:], stdin, stdout)
	case "replay":
		err = replay(args[1:], stdout)
	case "rotate-key":
		err = rotateKey(args[1:], stdout)
	case "bench":
		return benchMain(args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "engram: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "engram %s: %v\n", args[0], err)
		if _, ok := err.(exitCode); ok {
			return int(err.(exitCode))
		}
		return 1
	}
	return 0
}

// exitCode is an error that only carries a process exit status.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }
