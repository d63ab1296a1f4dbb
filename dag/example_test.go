package dag_test

import (
	"encoding/json"
	"fmt"

	"engram/dag"
)

func ExampleCanonical() {
	out, err := dag.Canonical(nil, []byte(`{"b": "\u00e9", "a": [1, -0, {"d": null, "c": true}]}`), true)
	fmt.Println(string(out), err)
	// Output: {"a":[1,0,{"c":true,"d":null}],"b":"é"} <nil>
}

func ExampleBuild() {
	key, err := dag.GenerateSigningKey()
	if err != nil {
		panic(err)
	}
	ver := dag.Version(dag.DefaultRoomVersion)
	create, err := dag.Build(dag.ProtoEvent{
		Sender:         "@alice:example.org",
		Type:           "m.room.create",
		StateKey:       new(string),
		Content:        json.RawMessage(`{"room_version":"12"}`),
		Depth:          1,
		OriginServerTS: 1700000000000,
	}, ver, "example.org", key.ID, key.Key)
	if err != nil {
		panic(err)
	}
	fmt.Println(create.RoomID == "!"+create.ID[1:])
	fmt.Println(create.VerifySignature("example.org", key.ID, key.Public()))
	// Output:
	// true
	// <nil>
}
