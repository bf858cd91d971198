package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Peak RSS (VmHWM) counts the pages of the binary's file a process has
// mapped, which depends on how the file sits in the page cache: two
// byte-identical copies of the same binary measured 20 MiB apart
// (BENCHMARKS.md). Anonymous memory (RssAnon: heap, stacks, buffers) is
// what the process itself holds; the kernel keeps no peak of it, so it is
// sampled.

// anonSampleEvery is how often anonPeaks reads each process's RssAnon.
const anonSampleEvery = 100 * time.Millisecond

// anonPeaks samples the anonymous memory of processes until stop is
// called, which returns each one's peak in bytes, by pid (absent when no
// sample could be read).
func anonPeaks(ctx context.Context, pids []int) (stop func() map[int]int64) {
	ctx, cancel := context.WithCancel(ctx)
	var mu sync.Mutex
	peaks := map[int]int64{}
	sample := func() {
		for _, pid := range pids {
			n, err := anonRSS(pid)
			if err != nil {
				continue
			}
			mu.Lock()
			peaks[pid] = max(peaks[pid], n)
			mu.Unlock()
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(anonSampleEvery)
		defer t.Stop()
		for {
			sample()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return func() map[int]int64 {
		cancel()
		<-done
		sample() // the end state too
		mu.Lock()
		defer mu.Unlock()
		return peaks
	}
}

// anonRSS returns a process's anonymous resident memory in bytes (RssAnon
// in /proc/<pid>/status; Linux only).
func anonRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return statusKB(b, "RssAnon:")
}

// statusKB reads the "<key> <n> kB" line of a /proc status file, in bytes.
func statusKB(status []byte, key string) (int64, error) {
	for line := range bytes.Lines(status) {
		rest, ok := bytes.CutPrefix(line, []byte(key))
		if !ok {
			continue
		}
		f := strings.Fields(string(rest)) // "123456 kB"
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("unexpected %s line %q", key, line)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, err
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("no %s line", key)
}
