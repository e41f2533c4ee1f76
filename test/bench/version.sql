SELECT harden.version();
