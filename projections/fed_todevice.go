package projections

// KindRemoteToDevice is the body of to-device messages for the users of
// another server. The federation sender delivers them from the log, as it
// does receipts, from each destination's delivery position: they survive a
// restart and are sent once a server is reachable again. No projection
// folds them.
const KindRemoteToDevice = 49

// RemoteToDeviceRecord is the body of KindRemoteToDevice, version 1: the
// content of one m.direct_to_device EDU.
type RemoteToDeviceRecord struct {
	Server       string `msgpack:"d"`
	Sender       string `msgpack:"s"`
	SenderDevice string `msgpack:"sd"`
	Type         string `msgpack:"t"`
	MessageID    string `msgpack:"i"`
	Messages     []byte `msgpack:"m"` // JSON: user ID -> device ID (or "*") -> content
}

func init() {
	registerKind(KindRemoteToDevice, func() any { return new(RemoteToDeviceRecord) })
}
