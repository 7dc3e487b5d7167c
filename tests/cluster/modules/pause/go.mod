// The real node's pause (sandbox) image: no registry is reachable, so it is built here.
module mlmodel.io/cluster/pause

go 1.26.0
