SELECT bench_order_naive();
