//! Access credentials: where a tunnel gets the token it presents to the edge.
