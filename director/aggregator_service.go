package director

import "github.com/fedplane/fedplane/api/aggregatorpb"

// aggregatorService implements openfl.aggregator.Aggregator for every
// experiment at once, told apart by MessageHeader.federation_uuid. Its RPCs
// come with the envoy and training issues; until then they answer
// Unimplemented through the embedded type.
type aggregatorService struct {
	aggregatorpb.UnimplementedAggregatorServer
	d *Director
}
