package log

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// crashChildEnv switches the test binary into the appending child of
// TestCrashRecovery; its value is the log directory.
const crashChildEnv = "ENGRAM_LOG_CRASH_CHILD"

// checksummedBody returns a random payload followed by its SHA-256, so that a
// record can prove it was not half-written.
func checksummedBody(rng *rand.Rand) []byte {
	payload := make([]byte, 16+rng.IntN(400), 16+rng.IntN(400)+sha256.Size+448)
	for i := range payload {
		payload[i] = byte(rng.Uint32())
	}
	sum := sha256.Sum256(payload)
	return append(payload, sum[:]...)
}

func verifyChecksum(b []byte) bool {
	if len(b) < sha256.Size {
		return false
	}
	sum := sha256.Sum256(b[:len(b)-sha256.Size])
	return bytes.Equal(sum[:], b[len(b)-sha256.Size:])
}

// crashChild appends from 32 goroutines until it is killed, printing
// "ack <seq> <hex sha256 of body>" after each Append returns. It runs the
// counting projection of the unit tests, so that the parent can check that
// projection rows and records survive a crash together.
func crashChild(dir string) {
	l, err := Open(Options{Dir: dir, Apply: countingApply(nil)})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child: open:", err)
		os.Exit(2)
	}
	acks := make(chan string, 4096)
	go func() {
		w := bufio.NewWriter(os.Stdout)
		for line := range acks {
			w.WriteString(line)
			if len(acks) == 0 {
				if err := w.Flush(); err != nil {
					os.Exit(3)
				}
			}
		}
	}()
	for g := range 32 {
		go func() {
			rng := rand.New(rand.NewPCG(uint64(os.Getpid()), uint64(g)))
			for {
				b := checksummedBody(rng)
				seq, err := l.Append(Record{Kind: Kind(g), Version: 1, Body: b})
				if err != nil {
					fmt.Fprintln(os.Stderr, "child: append:", err)
					os.Exit(4)
				}
				sum := sha256.Sum256(b)
				acks <- "ack " + strconv.FormatUint(seq, 10) + " " + hex.EncodeToString(sum[:]) + "\n"
			}
		}()
	}
	// The parent kills us; if it died instead, do not run forever.
	time.Sleep(30 * time.Second)
	fmt.Fprintln(os.Stderr, "child: not killed in time")
	os.Exit(5)
}

// TestCrashRecovery SIGKILLs an appending child process at a random moment,
// several times on the same directory, and checks after each crash that
// every acknowledged record survived with its body, that no record is
// half-written, that positions are contiguous from 1 to Last(), and that the
// projection rows written by Apply match the records exactly.
//
// SIGKILL keeps the page cache, so this tests the process-crash contract
// (nothing acknowledged is lost, no torn batch is visible), not power loss.
func TestCrashRecovery(t *testing.T) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		crashChild(dir)
		return
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	dir := t.TempDir()
	acked := make(map[uint64][sha256.Size]byte)
	const rounds = 5
	for round := range rounds {
		before := len(acked)
		killAfter := time.Duration(100+rng.IntN(300)) * time.Millisecond
		runCrashChild(t, dir, killAfter, acked)
		if t.Failed() {
			return
		}
		last := verifyAfterCrash(t, dir, acked)
		t.Logf("round %d: killed %v after the first ack; %d new acks; Last() = %d", round, killAfter, len(acked)-before, last)
		if len(acked) == before {
			t.Fatalf("round %d: the child acknowledged nothing", round)
		}
	}
}

// runCrashChild starts the child on dir, kills it killAfter its first ack,
// and adds every ack it printed to acked.
func runCrashChild(t *testing.T, dir string, killAfter time.Duration, acked map[uint64][sha256.Size]byte) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashRecovery$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	firstAck := make(chan struct{})
	var mu sync.Mutex
	var parseErr error
	badLine := "" // a line cut short by the kill may only be the last one
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(stdout)
		first := true
		for sc.Scan() {
			line := sc.Text()
			rest, ok := strings.CutPrefix(line, "ack ")
			if !ok {
				continue // test framework output
			}
			seqText, sumText, ok := strings.Cut(rest, " ")
			seq, err1 := strconv.ParseUint(seqText, 10, 64)
			sum, err2 := hex.DecodeString(sumText)
			if !ok || err1 != nil || err2 != nil || len(sum) != sha256.Size {
				// A line cut short by the kill is the last one; anything else
				// is a bug.
				badLine = line
				continue
			}
			mu.Lock()
			if badLine != "" && parseErr == nil {
				parseErr = fmt.Errorf("bad ack line %q before the last line", badLine)
			}
			if old, dup := acked[seq]; dup && old != [sha256.Size]byte(sum) {
				parseErr = fmt.Errorf("position %d acknowledged twice with different bodies", seq)
			}
			acked[seq] = [sha256.Size]byte(sum)
			mu.Unlock()
			if first {
				first = false
				close(firstAck)
			}
		}
	}()
	select {
	case <-firstAck:
	case <-readDone:
	case <-time.After(15 * time.Second):
	}
	time.Sleep(killAfter)
	killErr := cmd.Process.Signal(syscall.SIGKILL)
	<-readDone
	waitErr := cmd.Wait()
	var exit *exec.ExitError
	if killErr != nil || !errors.As(waitErr, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child did not die of SIGKILL (kill: %v, wait: %v); stderr:\n%s", killErr, waitErr, stderr.String())
	}
	mu.Lock()
	defer mu.Unlock()
	if parseErr != nil {
		t.Fatal(parseErr)
	}
}

// verifyAfterCrash reopens the log and checks it against every ack so far.
func verifyAfterCrash(t *testing.T, dir string, acked map[uint64][sha256.Size]byte) uint64 {
	t.Helper()
	l, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatalf("reopen after crash: %v", err)
	}
	defer l.Close()
	return verifyLog(t, l, acked)
}

// verifyLog checks a reopened log: every acknowledged record is present with
// its body, every record verifies its checksum, positions are contiguous
// from 1 to Last(), and the counting projection matches the records.
func verifyLog(t *testing.T, l *Log, acked map[uint64][sha256.Size]byte) uint64 {
	t.Helper()
	last := l.Last()
	seen := uint64(0)
	err := l.Read(1, func(seq uint64, rec Record) error {
		seen++
		if seq != seen {
			return fmt.Errorf("position %d follows %d", seq, seen-1)
		}
		if !verifyChecksum(rec.Body) {
			return fmt.Errorf("record %d is torn: checksum mismatch", seq)
		}
		if want, ok := acked[seq]; ok && sha256.Sum256(rec.Body) != want {
			return fmt.Errorf("record %d differs from the acknowledged body", seq)
		}
		// The projection row was written in the same batch as the record.
		row, closer, err := l.DB().Get(rowKey(seq))
		if err != nil {
			return fmt.Errorf("projection row %d: %w", seq, err)
		}
		defer closer.Close()
		if !bytes.Equal(row, rec.Body) {
			return fmt.Errorf("projection row %d differs from the record", seq)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen != last {
		t.Fatalf("Read saw %d records, Last() = %d", seen, last)
	}
	for seq := range acked {
		if seq > last {
			t.Fatalf("acknowledged record %d lost: Last() = %d", seq, last)
		}
	}
	if c := readCounter(t, l.DB()); c != last {
		t.Fatalf("projection counter %d, Last() %d: rows and records diverged", c, last)
	}
	if _, closer, err := l.DB().Get(rowKey(last + 1)); err == nil {
		closer.Close()
		t.Fatalf("projection row %d exists past Last() = %d", last+1, last)
	}
	return last
}
