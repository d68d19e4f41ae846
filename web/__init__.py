"""HTTP layer: Falcon apps for the server and for executor nodes, and the gateway into the actors."""
