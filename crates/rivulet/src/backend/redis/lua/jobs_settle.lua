-- Settles activations (see jobs_lib.lua for the keys and the first arguments).
--
-- ARGV[7]  how many settlements; then five arguments each: id, token, how
--          (complete|retry|fail|release), payload (the result or the error), delay ms
-- Returns one state (or 'lost') per settlement. O(settlements).
return settle_all(8, tonumber(ARGV[7]))
