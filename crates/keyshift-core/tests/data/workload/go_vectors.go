// Prints test vectors for keyshift's workload/zipf.rs and hash.rs (FNV-1a) tests.
// Run with Go (checked with go1.19.8): go run main.go
package main

import (
	"fmt"
	"hash/fnv"
	"math/rand"
)

// splitmix is a rand.Source whose Int63 stream the Rust tests reproduce:
// Int63 = splitmix64(state) >> 1.
type splitmix struct{ state uint64 }

func (s *splitmix) next() uint64 {
	s.state += 0x9e3779b97f4a7c15
	z := s.state
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}
func (s *splitmix) Int63() int64    { return int64(s.next() >> 1) }
func (s *splitmix) Seed(seed int64) { s.state = uint64(seed) }

// fixed replays a list of Int63 values.
type fixed struct {
	vals []int64
	i    int
}

func (f *fixed) Int63() int64    { v := f.vals[f.i]; f.i++; return v }
func (f *fixed) Seed(seed int64) {}

func fnv32a(b []byte) uint32 { h := fnv.New32a(); h.Write(b); return h.Sum32() }

type params struct {
	s, v float64
	imax uint64
}

func main() {
	fmt.Println("== fnv1a32: key, hash, seed partition for n = 1, 3, 10, 100")
	for _, k := range []string{"", "a", "ab", "abc", "foobar", "hello", "location_0", "location_1", "location_9", "location_2799", "ключ", "日本語", "\xff\x80"} {
		h := fnv32a([]byte(k))
		p := int64(int32(h) & 0x7fffffff)
		fmt.Printf("(%q, 0x%08x, [%d, %d, %d, %d]),\n", k, h, p%1, p%3, p%10, p%100)
	}
	fmt.Println("== fnv partitions of location_0..39 over 10")
	for i := 0; i < 40; i++ {
		h := fnv32a([]byte(fmt.Sprintf("location_%d", i)))
		fmt.Printf("%d:%d ", i, int32(h)&0x7fffffff%10)
	}
	fmt.Println()

	ps := []params{{1.1, 2.72, 2800}, {3.14, 2.72, 2800}, {5, 2.72, 2800}, {1.0001, 1, 1000}, {2, 1, ^uint64(0)}, {1.5, 10, 0}, {1.1, 2.72, 100000}}
	fmt.Println("== zipf first 40 from splitmix(seed=42)")
	for _, p := range ps {
		z := rand.NewZipf(rand.New(&splitmix{42}), p.s, p.v, p.imax)
		fmt.Printf("s=%v v=%v imax=%v: ", p.s, p.v, p.imax)
		for i := 0; i < 40; i++ {
			fmt.Printf("%d, ", z.Uint64())
		}
		fmt.Println()
	}
	fmt.Println("== zipf 1e6 draws from splitmix(seed=7): sum, fnv-style checksum")
	for _, p := range ps {
		src := &splitmix{7}
		z := rand.NewZipf(rand.New(src), p.s, p.v, p.imax)
		var sum uint64
		var ck uint64 = 0xcbf29ce484222325
		for i := 0; i < 1000000; i++ {
			k := z.Uint64()
			sum += k
			ck = (ck ^ k) * 0x100000001b3
		}
		fmt.Printf("s=%v v=%v imax=%v: sum=%d ck=0x%016x\n", p.s, p.v, p.imax, sum, ck)
	}
	fmt.Println("== zipf from fixed Int63 values (s=1.1 v=2.72 imax=2800)")
	edge := []int64{0, 1, 1 << 62, (1 << 63) - 1, 12345678901234567, 1 << 40, 7 << 59}
	for _, e := range edge {
		// (1<<63)-1 makes Float64 round to 1.0 and retry; the retry reads 1<<62.
		z := rand.NewZipf(rand.New(&fixed{vals: []int64{e, 1 << 62, 1 << 62, 1 << 62, 1 << 62, 1 << 62, 1 << 62, 1 << 62}}), 1.1, 2.72, 2800)
		fmt.Printf("int63=%d -> %d\n", e, z.Uint64())
	}
}
