package projections

import (
	"encoding/binary"
)

// Federation records and views (kinds 50-59, projection IDs '1'..'9').

// KindFedSent: the outbound federation sender delivered everything up to a
// log position to a destination.
const KindFedSent = 50

// FedSentRecord is the body of KindFedSent, version 1.
type FedSentRecord struct {
	Dest string `msgpack:"d"`
	Pos  uint64 `msgpack:"p"`
}

func init() {
	registerKind(KindFedSent, func() any { return new(FedSentRecord) })
	register(FedSent{})
}

// FedSent is the last log position sent per destination, so the sender
// resumes where it stopped after a restart:
//
//	'p' ‖ dest -> pos u64
type FedSent struct{}

func (FedSent) ID() byte     { return '1' }
func (FedSent) Name() string { return "fed_sent" }

func fedSentKey(dest string) []byte { return append([]byte{'p'}, dest...) }

func (FedSent) Apply(tx *Tx, _ uint64, v any) error {
	r, ok := v.(*FedSentRecord)
	if !ok {
		return nil
	}
	return tx.Set(fedSentKey(r.Dest), appendU64(nil, r.Pos))
}

// FedSentPositions returns every destination's last sent log position.
func (s *Store) FedSentPositions() (map[string]uint64, error) {
	out := map[string]uint64{}
	err := s.scan('1', []byte{'p'}, []byte{'q'}, false, func(k, v []byte) bool {
		if len(v) == 8 {
			out[string(k[1:])] = binary.BigEndian.Uint64(v)
		}
		return true
	})
	return out, err
}
