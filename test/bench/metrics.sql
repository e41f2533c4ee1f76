SELECT harden.metrics();
