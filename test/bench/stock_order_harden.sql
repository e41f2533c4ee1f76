SELECT bench_order_harden();
