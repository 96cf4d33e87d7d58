module service-to-service/bench/go

go 1.19
